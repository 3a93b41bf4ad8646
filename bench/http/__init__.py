"""Benchmarks of Envoy's HTTP ext_authz mode (http_service): authz, do-nothing floors, native."""
