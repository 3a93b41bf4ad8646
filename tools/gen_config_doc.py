"""Regenerate docs/configuration.md from the settings model: `python tools/gen_config_doc.py`.

Names, environment variables, defaults, Ant Media Server properties, policy fields and claim
tests come from the settings package itself (authz/settings/: model, convert, errors, ams,
policies); the prose for each comes from the tables below,
which must name every setting exactly once (a setting added to the model without prose, or
prose left for a removed one, is an error). `--check` exits 1 when the committed file is not
what this script makes (tests/contract/test_config_doc.py runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The imports below come after the path is set for a checkout, hence E402.
from authz.core.policy import DEFAULT_POLICY, POLICY_CONTEXT_KEY  # noqa: E402
from authz.settings.ams import AMS_KEYS  # noqa: E402
from authz.settings.convert import (  # noqa: E402
    CONVERTERS,
    MAX_DRAIN_DELAY_SECONDS,
    MAX_LEEWAY_SECONDS,
)
from authz.settings.errors import ENV_PREFIX, env_name  # noqa: E402
from authz.settings.issuers import ISSUER_KEYS  # noqa: E402
from authz.settings.model import Settings  # noqa: E402
from authz.settings.policies import CLAIM_OPS, POLICY_KEYS  # noqa: E402

OUT = ROOT / "docs" / "configuration.md"

# setting -> (accepted values, meaning)
SETTINGS: dict[str, tuple[str, str]] = {
    "grpc_address": (
        "`host:port`, IPv6 as `[::]:9001`",
        "Where the ext_authz gRPC service (`envoy.service.auth.v3.Authorization/Check`) and "
        "`grpc.health.v1.Health` listen. Envoy's `authz` cluster points here.",
    ),
    "http_address": (
        "`host:port`",
        "Where `/metrics`, `/healthz` and `/readyz` listen. Not 9090: that is Prometheus' "
        "own port.",
    ),
    "http_authz_address": (
        "`host:port`, or empty for off",
        "Envoy's HTTP ext_authz mode (`http_service`): a second front door to the same "
        "decisions, counted in the same metrics. Off unless set.",
    ),
    "hs256_secret": (
        "UTF-8 text, at least 32 bytes",
        "The HMAC secret for HS256/HS384/HS512 tokens; it verifies HS384 only when at least "
        "48 bytes long and HS512 only when at least 64 (RFC 7518 3.2), other HS algorithms "
        "answer `alg_not_allowed`. Never printed or logged. Prefer "
        "`hs256_secret_file` or the environment in production: a secret in a config file "
        "ends up where secrets should not be.",
    ),
    "hs256_secret_file": (
        "a file path",
        "A file of secrets, one per line (blank lines ignored, each at least 32 bytes), "
        "watched and reloaded when it changes, also when Kubernetes swaps a mounted Secret. "
        "The first line signs (`authz token`), every line verifies: rotate by adding the new "
        "secret on top, waiting for old tokens to expire, then removing the old line. Missing "
        "or empty at start is an error; unreadable later keeps the last good secrets. Its "
        "secrets come before `hs256_secret`.",
    ),
    "jwks_url": (
        "an `https://` URL (`http://` for loopback or in-cluster), without a user name or "
        "password in it",
        "Where the JSON Web Key Set for RS*/PS*/ES*/EdDSA tokens is fetched. A bare origin "
        "such as `https://tenant.auth0.com` means `<origin>/.well-known/jwks.json`. authz is "
        "not ready until the first fetch succeeds; a failed, slow, oversized or malformed "
        "answer never replaces the last good key set. Pair it with `issuer` or `audience`: "
        "an issuer's keys also sign its ID tokens and tokens for its other services, so "
        "without either check all of them pass, and authz logs a warning at start naming the "
        "policies concerned (RFC 8725 sections 3.8, 3.9, 3.12).",
    ),
    "jwks_refresh_seconds": (
        "a number, at least 1",
        "How often the key set is refreshed in the background (with jitter; "
        "`Cache-Control: max-age` is honoured within bounds). A token with an unknown `kid` "
        "also triggers one refresh, at most once every 30 s.",
    ),
    "jwks_ca_file": (
        "a PEM file path",
        "CA bundle trusted for `jwks_url`, for an issuer inside the cluster. Checked at "
        "start. Not set: the system's CAs.",
    ),
    "issuer": (
        "text",
        "The `iss` every token must carry. Not set: not checked.",
    ),
    "audience": (
        "a list, or comma-separated text",
        "Accepted `aud` values; one match suffices (`aud` may be a string or an array). Not "
        "set: not checked.",
    ),
    "leeway_seconds": (
        f"a number of seconds, 0 to {MAX_LEEWAY_SECONDS}",
        "Clock skew allowed on `exp`, `nbf` and `iat`. More than "
        f"{MAX_LEEWAY_SECONDS} s is refused at start (exit 2): a large leeway keeps "
        "long-expired tokens valid; keep the clocks right (NTP) instead.",
    ),
    "require_exp": (
        "true/false (also yes/no, on/off, 1/0)",
        "Reject tokens without `exp` (reason `missing_exp`). Ant Media's own token page "
        "makes tokens without `exp`, so it is off by default.",
    ),
    "allowed_cidrs": (
        "a list, or comma-separated text, of IPv4/IPv6 CIDRs; a bare address is one host",
        "The IP filter: the client address Envoy saw must be in one of these (reason "
        "`ip_not_allowed`, 403). Empty: off. Host bits are masked off (`10.1.2.3/8` means "
        "`10.0.0.0/8`), as Ant Media reads `remoteAllowedCIDR`. An IPv4 client matches the "
        "IPv4 CIDRs also when Envoy reports it IPv4-mapped (`::ffff:10.1.2.3`), and only "
        "those: an IPv4-mapped CIDR (`::ffff:10.0.0.0/104`) is read as its IPv4 form "
        "(`10.0.0.0/8`), and an IPv6 CIDR such as `::/0` covers IPv6 clients only.",
    ),
    "jwt_enabled": (
        "true/false",
        "`false` turns the JWT check off (Ant Media's `jwtControlEnabled`): requests pass "
        "with reason `jwt_disabled`; the IP filter still applies. authz logs a warning at "
        "start while it is off (once, also with `--workers N`).",
    ),
    "log_level": (
        "`debug`, `info`, `warning`, `error`",
        "Structured JSON logs on stderr at this level. No level ever logs a token or a secret.",
    ),
    "drain_delay_seconds": (
        f"a number of seconds, 0 to {MAX_DRAIN_DELAY_SECONDS}",
        "On SIGTERM, how long authz keeps answering Checks after it turned not-ready "
        "(`/readyz` 503, gRPC health `NOT_SERVING`) before it closes its ports: long enough "
        "for Envoy's health check and Kubernetes to stop sending it traffic, so that a "
        "rolling update loses no Check. Envoy's `health_checks` interval times "
        "`unhealthy_threshold`, plus a margin (the shipped Envoy configs: 1 s x 2). Then "
        "in-flight Checks get 5 s to finish. Keep `terminationGracePeriodSeconds` above the "
        "sum (docs/drain.md).",
    ),
    "token_cache_size": (
        "a whole number, 0 for no cache",
        "Verified tokens remembered to skip repeated signature checks; an entry is never used "
        "past its `exp` or after its key is gone.",
    ),
    "stream_secret": (
        "UTF-8 text, at least 32 bytes",
        "The secret Ant Media signs its stream tokens with (HS256, claims `streamId`, `type` "
        "`play`/`publish`, `exp`). It verifies stream tokens only, HS256 only: never a REST "
        "token, and the REST secrets never verify a stream token (a secret set as both is "
        "warned about at start). Required while `play_jwt_enabled` or `publish_jwt_enabled` "
        "is on. Never printed or logged.",
    ),
    "stream_secret_file": (
        "a file path",
        "A file of stream secrets, one per line, watched and reloaded exactly like "
        "`hs256_secret_file` (first line signs, all verify; missing or empty at start is an "
        "error, unreadable later keeps the last good secrets). Its secrets come before "
        "`stream_secret`.",
    ),
    "play_jwt_enabled": (
        "true/false",
        "Enforce play tokens on stream routes (Envoy `context_extensions: {stream: play}`; "
        "HTTP door: `x-authz-stream: play`): GET/HEAD need a token from `?token=` or the "
        "`authorization` header (one of the two) signed with the stream secret, with `exp`, "
        "`type: play` and `streamId` equal to the stream id of the path (else 403 "
        "`stream_mismatch`; a path without one is 403 `no_stream_id`); OPTIONS passes "
        "(`jwt_disabled`); other methods are 403 `method_not_allowed`. On allow the "
        "upstream gets `x-jwt-stream-id` and, through the gRPC door, the URL without "
        "`token`. Off: stream routes pass (`jwt_disabled`). Also the `/play` webhook's "
        "switch.",
    ),
    "publish_jwt_enabled": (
        "true/false",
        "Enforce publish tokens at the `/publish` webhook (token signed with the stream "
        "secret, `exp`, `type: publish`, `streamId` equal to the body's). Off: `/publish` "
        "answers 200 `jwt_disabled`.",
    ),
    "ams_webhook_address": (
        "`host:port`, or empty for off",
        "Where Ant Media's webhooks are answered: `POST /publish` (point "
        "`settings.webhookAuthenticateURL` at it) and `POST /play` (WebRTC play, "
        "`settings.webhookPlayAuthUrl`). 200 allows; 403 with the JSON deny body refuses; "
        "a body that is not a JSON object or is over 64 KiB is 400 `malformed`; other "
        "paths 404, other methods 405. Counted in the metrics with `transport=\"webhook\"`. "
        "Off unless set.",
    ),
    "cluster_secret": (
        "UTF-8 text, at least 32 bytes",
        "The secret of Ant Media's edge-to-origin `ClusterAuthorization` tokens. With it, "
        "a stream route request carrying that header is judged by that token alone (same "
        "`streamId` and `type: play` rules, `exp` required). Not set: the header is never "
        "trusted and the request is judged by its play token as any other.",
    ),
    "tls_cert_file": (
        "a PEM file path (the chain, leaf first)",
        "Serve the gRPC door and the HTTP authz door over TLS (1.2 or newer) with this "
        "certificate; needs `tls_key_file`. `/metrics` and the probes on `http_address` stay "
        "plaintext. Watched and reloaded when it changes (cert-manager rotation, Kubernetes "
        "symlink swaps included): new handshakes get the new certificate, established "
        "connections go on. Unreadable, or not matching the key, at start: exit 2; later: "
        "the last good pair stays (`authz_tls_reloads_total{result=\"failure\"}`). Not "
        "set: plaintext.",
    ),
    "tls_key_file": (
        "a PEM file path (unencrypted private key)",
        "The private key of `tls_cert_file`, watched with it. Never printed or logged.",
    ),
    "tls_client_ca_file": (
        "a PEM file path (one or more CA certificates)",
        "mTLS: a client must present a certificate signed by one of these CAs; a client "
        "with none, or with one from another CA, is refused at the handshake. Needs "
        "`tls_cert_file`. Watched and reloaded like it (a new CA replaces the old one for "
        "new handshakes). Not set: no client certificate is asked for.",
    ),
    "oidc_issuer": (
        "an `https://` (or `http://`) issuer URL, exactly as its tokens' `iss`",
        "One identity provider found by OpenID Connect discovery: the shorthand of an "
        "`issuers:` list with this one entry and no `jwks_url` (see Identity providers "
        "below). Conflicts with `jwks_url` and with `issuers:` (exit 2). With it, "
        "`issuer`, when set, must be this same value.",
    ),
}

# issuers: entry field -> meaning
ISSUER_FIELDS: dict[str, str] = {
    "issuer": "Required. The exact `iss` its tokens carry, trailing slash included. Without "
    "`jwks_url` an `https://` (or `http://`) URL with no query or fragment, where discovery "
    "starts; with one, any string.",
    "jwks_url": "Its JWKS URL (a bare origin means `<origin>/.well-known/jwks.json`). Left "
    "out: OpenID Connect discovery, `<issuer without its trailing slash>/.well-known/"
    "openid-configuration` -> `jwks_uri`.",
    "audience": "`aud` values of which its tokens must carry one (a list or a comma-separated "
    "string), checked besides the policy's `audience`. Left out: no per-issuer check.",
    "algorithms": "Allow-list of the JWS algorithms its keys may verify (RS256, RS384, RS512, "
    "PS256, PS384, PS512, ES256, ES384, ES512, EdDSA); others are `alg_not_allowed`. Left "
    "out: all of them, as each key's type allows.",
}

# policy field -> (the flat setting it inherits, meaning)
POLICY_FIELDS: dict[str, tuple[str | None, str]] = {
    "jwt_enabled": ("jwt_enabled", "`false`: this route needs no token."),
    "allowed_cidrs": ("allowed_cidrs", "The route's IP filter; `[]` turns it off for the route."),
    "issuer": ("issuer", "Required `iss`; `\"\"` drops the requirement for the route."),
    "audience": ("audience", "Accepted `aud` values; `[]` drops the requirement."),
    "required_claims": (
        None,
        "Rules every token must meet, else 403 `insufficient_scope`: a list of "
        "`{claim: NAME, TEST: VALUE}` with one test each (below).",
    ),
    "token_sources": (
        None,
        "Where the token comes from, in order: `header:authorization` (the default and only "
        "source when left out), `query:NAME`, `cookie:NAME`. A token in two listed sources "
        "is `malformed`, none is `missing_token`; a query parameter or cookie given twice "
        "is `malformed`. The query string is read as form-urlencoded (`%XX` and `+` decoded "
        "once). A `query:NAME` is letters, digits, `.`, `_` and `-` (what no client "
        "percent-encodes), and its parameter is read only as spelled: a name percent-encoded "
        "into it (`?%74oken=` for `token`) is `malformed`, since Envoy would not remove it "
        "(docs/security.md). A token taken from the query is removed from the upstream URL "
        "by the gRPC door (Envoy's HTTP mode cannot remove it).",
    ),
    "forward_claims": (
        None,
        "`{claim: header}`: claims sent upstream as headers on allow. Header names must start "
        "with `x-jwt-` (not `x-jwt-sub`, which always carries `sub`), because only `x-jwt-*` "
        "headers are stripped from client requests, so upstream can trust them. Each one is "
        "also in the allow's dynamic metadata under the claim's name (gRPC door; the HTTP "
        "door sends `x-authz-claim-<name>`), for Envoy's access log, RBAC and rate limits.",
    ),
    "issuers": (
        None,
        "The identity providers (their exact `issuer`) whose tokens the route takes; a token "
        "of another, or verified by an HS256 secret, is `issuer_mismatch`. Each must be in "
        "`issuers:` (exit 2 otherwise). Left out: any configured one.",
    ),
}

CLAIM_TESTS: dict[str, str] = {
    "equals": "the claim is this one value (JSON types must agree: `true` is not `1`)",
    "one_of": "the claim is one of these values, e.g. `role` in `[admin, publisher]`",
    "contains": "a word of a string whose words are separated by the space character "
    "(U+0020) only, as OAuth `scope` is (RFC 6749 section 3.3; a tab or a no-break space "
    "does not separate), or a member of an array",
}


def _default(value: object) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value) if value else "empty"
    return f"`{value}`"


def _same_keys(what: str, documented: Iterable[str], model_keys: Iterable[str]) -> None:
    documented_set, model_set = set(documented), set(model_keys)
    if documented_set != model_set:
        missing, extra = sorted(model_set - documented_set), sorted(documented_set - model_set)
        raise SystemExit(
            f"tools/gen_config_doc.py: {what} out of step with authz/settings/: "
            f"undocumented {missing}, documented but gone {extra}"
        )


def render() -> str:
    """The text of docs/configuration.md."""
    keys = list(CONVERTERS)
    _same_keys("settings", SETTINGS, keys)
    _same_keys("policy fields", POLICY_FIELDS, POLICY_KEYS)
    _same_keys("claim tests", CLAIM_TESTS, CLAIM_OPS)
    _same_keys("issuer fields", ISSUER_FIELDS, ISSUER_KEYS)
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    ams = {key: prop for prop, key in AMS_KEYS.items()}

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/gen_config_doc.py from the settings model (authz/settings/)."
        " Do not edit by hand:",
        "     run `.venv/bin/python tools/gen_config_doc.py`. -->",
        "",
        "authz reads one settings model from these sources, later wins:",
        "",
        "1. built-in defaults;",
        "2. a YAML file, `--config FILE` (keys below; `examples/authz.yaml` shows them all);",
        "3. an Ant Media Server `red5-web.properties` file, `--ams-properties FILE`;",
        f"4. environment variables, `{ENV_PREFIX}` + the key in upper case.",
        "",
        "`authz serve` and `authz token` read the same sources. An environment variable set to "
        "the empty string puts its setting back to the built-in default. Unknown keys, keys "
        "given twice and invalid values stop the start with one line naming the setting, and "
        "exit code 2. At least one of a secret, a secret file, a JWKS URL or an identity "
        "provider is required while JWT checking is on.",
        "",
        "## Settings",
        "",
        "| YAML key | environment variable | default |",
        "|---|---|---|",
    ]
    out += [f"| [`{k}`](#{k}) | `{env_name(k)}` | {_default(defaults[k])} |" for k in keys]
    for key in keys:
        values, meaning = SETTINGS[key]
        out += ["", f"### {key}", "", meaning, ""]
        out.append(f"- environment: `{env_name(key)}`")
        out.append(f"- values: {values}")
        out.append(f"- default: {_default(defaults[key])}")
        if key in ams:
            out.append(f"- Ant Media Server property: `{ams[key]}`")

    out += [
        "",
        "## Ant Media Server properties (`--ams-properties`)",
        "",
        "The JWT, stream token and IP filter settings of an Ant Media app "
        "(`webapps/<app>/WEB-INF/red5-web.properties`) map to these settings; other "
        "properties are ignored, and so are empty values.",
        "",
        "| property | setting |",
        "|---|---|",
    ]
    out += [f"| `{prop}` | [`{key}`](#{key}) |" for prop, key in AMS_KEYS.items()]
    out += [
        "| `settings.ipFilterEnabled` | `false` ignores `settings.remoteAllowedCIDR` |",
        "",
        "## Per-route policies (`policies:` in the YAML file)",
        "",
        "An Envoy route names a policy in its ext_authz per-route `context_extensions` "
        f"(key `{POLICY_CONTEXT_KEY}`; through the HTTP door, the `x-authz-policy` header). "
        f"Routes that name none, and routes that name `{DEFAULT_POLICY}`, use the "
        "default policy: the flat settings above, or the policy written out as "
        f"`{DEFAULT_POLICY}` under `policies:`, which then replaces them for both. A "
        "route naming an undefined policy is denied (403 `unknown_policy`). In a policy, a "
        "field left out (or null) takes the flat setting's value.",
        "",
        "| field | left out: takes | meaning |",
        "|---|---|---|",
    ]
    for field_name in POLICY_KEYS:
        inherits, meaning = POLICY_FIELDS[field_name]
        taken = f"`{inherits}`" if inherits else "nothing"
        out.append(f"| `{field_name}` | {taken} | {meaning} |")
    out += ["", "Claim tests in `required_claims`:", "", "| test | passes when |", "|---|---|"]
    out += [f"| `{op}` | {CLAIM_TESTS[op]} |" for op in CLAIM_OPS]
    out += [
        "",
        "```yaml",
        "policies:",
        "  admin:                      # envoy.yaml: context_extensions: { policy: admin }",
        "    required_claims:",
        "      - {claim: role, one_of: [admin, publisher]}",
        "      - {claim: scope, contains: publish}",
        "    forward_claims:",
        "      role: x-jwt-role",
        "```",
        "",
    ]
    return "\n".join(out)


def _identity_providers() -> list[str]:
    out = [
        "",
        "## Identity providers (`issuers:` in the YAML file)",
        "",
        "Three forms name where public keys come from, one at a time (two of them together "
        "stop the start, exit 2):",
        "",
        "- `jwks_url` (`AUTHZ_JWKS_URL`, Ant Media's `settings.jwksURL`), with `issuer` when "
        "tokens must carry that `iss`: one key set; tokens are not chosen by `iss`. Its "
        "metrics carry `issuer` = the `issuer` setting (empty when not set).",
        "- `oidc_issuer` (`AUTHZ_OIDC_ISSUER`): one identity provider found by discovery.",
        "- `issuers:`: one or more identity providers, each with keys of its own.",
        "",
        "With identity providers, a token of a public-key algorithm is read before "
        "verification only to choose: its `iss` must equal one entry's `issuer` exactly "
        "(else `issuer_mismatch`), and only that entry's keys are tried, by `kid`: a key of "
        "another issuer, even under the same `kid`, never verifies it. HS256 tokens still "
        "verify with the secrets. The flat `issuer` / `audience` and a policy's `issuer` / "
        "`audience` are checked on top; `issuer`, when set, must be one of the entries "
        "unless an HS256 secret is configured (whose tokens may carry it).",
        "",
        "| field | meaning |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {ISSUER_FIELDS[name]} |" for name in ISSUER_KEYS]
    out += [
        "",
        "Discovery (OpenID Connect Discovery 1.0 section 4): the issuer's trailing slash is "
        "removed before `/.well-known/openid-configuration` is appended, so "
        "`https://tenant.eu.auth0.com/` is read at "
        "`https://tenant.eu.auth0.com/.well-known/openid-configuration`, never with `//`. A "
        "document whose `issuer` is not exactly the configured one (a trailing slash more or "
        "less included; RFC 8414 section 3.3) is not used, nor a `jwks_uri` over `http://` "
        "named by a document fetched over `https://`. The document is read again at every "
        "refresh of the key set, both inside one fetch's time limit.",
        "",
        "```yaml",
        "issuers:",
        "  # auth0: the issuer ends with a slash, and so does every token's iss.",
        "  - issuer: https://tenant.eu.auth0.com/",
        "    audience: [ams-rest]             # the API identifier",
        "    algorithms: [RS256]",
        "  # Ory Hydra: the public port; iss is its urls.self.issuer, usually with a slash.",
        "  - issuer: https://hydra.internal:4444/",
        "    jwks_url: https://hydra.internal:4444/.well-known/jwks.json",
        "  # Keycloak: a realm's issuer is a path without a trailing slash.",
        "  - issuer: https://sso.example.com/realms/ams",
        "    audience: [ams-rest]",
        "```",
        "",
        "**When one is down.** Each issuer is fetched and refreshed on its own, with the "
        "rules of the JWKS URL (refresh period, `Cache-Control`, backoff, stale-if-error, "
        "the unknown-kid refetch at most every 30 s, the key cap). `/readyz` is 200 once "
        "every issuer has loaded a key set once, so a pod whose issuer is unreachable at "
        "start stays out of rotation; meanwhile the other issuers' tokens are decided as "
        "usual and that issuer's answer 503 `jwks_unavailable`. An issuer that fails later "
        "keeps its last good keys (its `authz_jwks_consecutive_failures{issuer=...}` "
        "climbs and `AuthzJwksRefreshFailing` fires for it alone). An unknown `kid` "
        "refetches the keys of the token's issuer only; a dead issuer never holds up a "
        "Check of another.",
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python tools/gen_config_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
