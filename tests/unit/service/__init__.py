"""authz/service: the Checker."""
