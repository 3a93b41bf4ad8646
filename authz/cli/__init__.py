"""The command line: `authz serve | token | check | demo` (SPEC section 7); `main` is in main.py."""
