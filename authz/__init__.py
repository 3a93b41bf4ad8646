"""authz: Envoy external authorization for Ant Media Server's REST API, with JWTs."""

__version__ = "0.1.0"
