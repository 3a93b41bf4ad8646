"""authz/core: the pure decision core, one test module per core module. Every SPEC section 5
row is reachable here without servers; helpers.py holds what the modules share."""
