"""The settings: one typed, validated object from defaults, YAML, AMS properties and env.

- `model`: the `Settings` dataclass;
- `errors`: `SettingsError` and how a setting is named in messages and the environment;
- `convert`: the value converters, and which one reads each flat setting;
- `ams`: Ant Media Server's `red5-web.properties`;
- `policies`: the `policies:` section into `authz.core.policy.Policy` objects;
- `checks`: the start checks and `start_warnings`;
- `load`: `load_settings`, layering the sources;
- `addresses`: `host:port` listen addresses.
"""
