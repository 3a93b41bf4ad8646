"""The front doors: gRPC Check API, Envoy's HTTP ext_authz mode, metrics and probes."""
