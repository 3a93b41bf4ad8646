"""authz/keys: JWKS parsing and the secret file watcher."""
