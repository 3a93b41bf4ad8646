"""authz/core: the pure decision core, one test module per core module."""
