"""Benchmarks of authz against Envoy's native jwt_authn (run: python -m bench)."""
