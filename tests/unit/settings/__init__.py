"""authz/settings: the typed settings and their loaders."""
