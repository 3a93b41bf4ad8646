"""Wire contracts: protos and schemas, the front doors and the JWKS client on real loopback
sockets, the config docs and the deploy manifests. No Envoy, Tomcat or authz process runs."""
