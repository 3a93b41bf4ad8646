"""Secret hygiene: no token, signature or secret ever appears in what authz emits.

A real authz at AUTHZ_LOG_LEVEL=debug (HS256 secret from env and a two-line secret file,
a JWKS whose URL carries a credential in its query, per-route policies) with the real
Envoy in front is driven through every decision reason of SPEC section 5: through Envoy
where a route reaches it, directly over gRPC where only a route's context_extensions or
a broken request can (unknown_policy, jwt_disabled, ip_not_allowed, internal_error), and
a second authz whose JWKS never loads for jwks_unavailable: its JWKS server redirects to a
URL with a password and a query credential, which every fetch then fails on. A third authz
is given a JWKS URL with a user name and password, which it refuses at start (exit 2).
Then everything is searched for the tokens, their signatures and the secrets in several
encodings: all authz logs, their /metrics, Envoy's log (with its access log), and every
response (status line, headers, body; CheckResponse bytes).
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz.core.base64url import b64url
from authz.core.decision import Reason
from authz.core.mint import mint_hmac
from tests.credentials import OTHER_SECRET, SECRET
from tests.harness import echo_upstream, request, run_authz, run_envoy, wait_until
from tests.jwks_server import JWKSServer, free_port
from tests.reliability import REST, check_request, grpc_check, jwks_of, reason_of, rs256

pytestmark = pytest.mark.e2e

FILE_SECRETS = (
    "hygiene-file-secret-line-one-0123456789",
    "hygiene-file-secret-line-two-9876543210",
)
JWKS_CREDENTIAL = "jwks-query-credential-5f3a9c"
JWKS_USER = "hygiene-jwks-user"
JWKS_PASSWORD = "jwks-userinfo-password-2b7d41"
REDIRECT_PASSWORD = "jwks-redirect-password-e81f06"
STREAM_SECRET = "hygiene-stream-secret-0123456789abcdef"
ISSUER = "https://issuer.example"
AUDIENCE = "media-api"
CONFIG = """\
policies:
  admin:
    required_claims:
      - {claim: scope, contains: admin}
    forward_claims:
      tenant: x-jwt-tenant
  open:
    jwt_enabled: false
  office:
    allowed_cidrs: "10.0.0.0/8"
"""


def _claims(**extra: object) -> dict[str, object]:
    claims: dict[str, object] = {"sub": "hygiene-user", "iss": ISSUER, "aud": AUDIENCE,
                                 "exp": time.time() + 600}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(secret: str, **extra: object) -> str:
    return mint_hmac(_claims(**extra), secret.encode())


def _rs(kid: str) -> str:
    return rs256(kid, ttl=600, sub="hygiene-user", iss=ISSUER, aud=AUDIENCE)


# Through Envoy's default route: token -> the reason it must get.
ENVOY_CASES: list[tuple[str | None, Reason]] = [
    (_hs(SECRET), Reason.OK),
    (_hs(FILE_SECRETS[0]), Reason.OK),
    (_hs(FILE_SECRETS[1]), Reason.OK),
    (_rs("a"), Reason.OK),
    (None, Reason.MISSING_TOKEN),
    ("abc.def", Reason.MALFORMED),
    (b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(_claims()).encode()) + ".",
     Reason.ALG_NOT_ALLOWED),
    (_hs(OTHER_SECRET.decode()), Reason.BAD_SIGNATURE),
    (_rs("rogue"), Reason.BAD_SIGNATURE),
    (_rs("not-published"), Reason.UNKNOWN_KID),
    (_hs(SECRET, exp=time.time() - 3600), Reason.EXPIRED),
    (_hs(SECRET, nbf=time.time() + 3600), Reason.NOT_YET_VALID),
    (_hs(SECRET, iss="https://evil.example"), Reason.ISSUER_MISMATCH),
    (_hs(SECRET, aud="someone-else"), Reason.AUDIENCE_MISMATCH),
    (_hs(SECRET, exp=None), Reason.MISSING_EXP),
]
# Through Envoy's StrictApp route (context_extensions: policy admin).
STRICT_CASES: list[tuple[str, Reason]] = [
    (_hs(SECRET, scope="read"), Reason.INSUFFICIENT_SCOPE),
    (_hs(SECRET, scope="read admin", tenant="acme"), Reason.OK),
]
# Directly over gRPC with a route's context_extensions.
GRPC_CASES: list[tuple[str, dict[str, str], Reason]] = [
    (_hs(SECRET), {"policy": "no-such-policy"}, Reason.UNKNOWN_POLICY),
    (_hs(SECRET), {"policy": "open"}, Reason.JWT_DISABLED),
    (_hs(SECRET), {"policy": "office"}, Reason.IP_NOT_ALLOWED),
]


def _play(stream_id: str, kind: str = "play") -> str:
    claims = {"streamId": stream_id, "type": kind, "exp": time.time() + 600}
    return mint_hmac(claims, STREAM_SECRET.encode())


# Stream routes over gRPC (context_extensions stream: play): path, method, reason.
STREAM_PATH = "/LiveApp/streams/stream1.m3u8"
STREAM_CASES: list[tuple[str, str, Reason]] = [
    (f"{STREAM_PATH}?token={_play('stream1')}", "GET", Reason.OK),
    (f"{STREAM_PATH}?token={_play('other')}", "GET", Reason.STREAM_MISMATCH),
    (f"/LiveApp/streams/?token={_play('stream1')}", "GET", Reason.NO_STREAM_ID),
    (f"{STREAM_PATH}?token={_play('stream1')}", "POST", Reason.METHOD_NOT_ALLOWED),
]


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), b64url(raw), binascii.hexlify(raw).decode()]


def _needles() -> list[str]:
    tokens = [t for t, _ in ENVOY_CASES if t] + [t for t, _ in STRICT_CASES]
    tokens += [t for t, _, _ in GRPC_CASES]
    tokens += [path.split("token=")[1] for path, _, _ in STREAM_CASES]
    needles = list(tokens)
    needles += [t.rsplit(".", 1)[1] for t in tokens if len(t.rsplit(".", 1)[-1]) >= 16]
    secrets = (SECRET, STREAM_SECRET, *FILE_SECRETS, JWKS_CREDENTIAL, JWKS_PASSWORD,
               REDIRECT_PASSWORD)
    for secret in secrets:
        needles += _forms(secret)
    needles.append(JWKS_USER)
    return needles


@pytest.fixture(scope="module")
def emitted() -> Iterator[str]:
    """Everything authz and Envoy emitted while every decision path ran, as one text."""
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, JWKSServer(jwks_of("a")) as jwks:
        secret_file = Path(tmp) / "secrets"
        secret_file.write_text("\n".join(FILE_SECRETS) + "\n")
        config = Path(tmp) / "authz.yaml"
        config.write_text(CONFIG)
        env = {
            "AUTHZ_LOG_LEVEL": "debug",
            "AUTHZ_HS256_SECRET_FILE": str(secret_file),
            "AUTHZ_JWKS_URL": f"{jwks.url}?access_token={JWKS_CREDENTIAL}",
            "AUTHZ_ISSUER": ISSUER,
            "AUTHZ_AUDIENCE": AUDIENCE,
            "AUTHZ_REQUIRE_EXP": "true",
            "AUTHZ_STREAM_SECRET": STREAM_SECRET,
            "AUTHZ_PLAY_JWT_ENABLED": "true",
        }
        with echo_upstream() as upstream, run_authz(env, args=("--config", str(config))) as authz, \
                run_envoy({"authz": authz.grpc_port, "ant_media": upstream},
                          wait_cluster_healthy=None) as envoy:
            wait_until(lambda: request(envoy.port, REST, {"Authorization": _hs(SECRET)}).status
                       == 200, what="served via Envoy")
            for path, cases in ((REST, ENVOY_CASES), ("/StrictApp/rest/v2/x", STRICT_CASES)):
                for token, reason in cases:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    answer = request(envoy.port, path, headers)
                    got = "ok" if answer.status == 200 else answer.json()["reason"]
                    assert got == reason.value, (token, got)
                    out += [str(answer.status), json.dumps(answer.headers)]
                    if answer.status != 200:
                        # An allowed request's body is the stand-in upstream's echo of what
                        # it received, Authorization included: not authz's to judge.
                        out.append(answer.body.decode())
            for token, context, reason in GRPC_CASES:
                response = grpc_check(authz.grpc_port, check_request(f"Bearer {token}",
                                                                     context=context))
                assert reason_of(response) == reason.value
                out.append(response.SerializeToString().decode("latin-1"))
            for path, method, reason in STREAM_CASES:
                response = grpc_check(authz.grpc_port, check_request(
                    None, context={"stream": "play"}, path=path, method=method))
                assert reason_of(response) == reason.value
                out.append(response.SerializeToString().decode("latin-1"))
            broken = grpc_check(authz.grpc_port, b"\xff\xff\xff")
            assert reason_of(broken) == Reason.INTERNAL_ERROR.value
            out.append(broken.SerializeToString().decode("latin-1"))
            out.append(authz.metrics())
            out.append(authz.logs())
            out.append(envoy.logs())
        # A second authz whose JWKS never loads: jwks_unavailable. Its server redirects to
        # a URL with a password (without a port: http.client reads "password@host" as one,
        # and its error quotes it) and a query credential.
        with JWKSServer(b"") as redirector:
            redirector.status = 302
            redirector.headers["Location"] = (
                f"http://{JWKS_USER}:{REDIRECT_PASSWORD}@127.0.0.1/jwks.json"
                f"?access_token={JWKS_CREDENTIAL}"
            )
            out += _cold_authz(env, config, f"{redirector.url}?access_token={JWKS_CREDENTIAL}")
            assert redirector.requests >= 1
        # A third authz given a JWKS URL with userinfo: refused at start, one line.
        refused_url = f"https://{JWKS_USER}:{JWKS_PASSWORD}@127.0.0.1:{free_port()}/jwks.json"
        with run_authz({**env, "AUTHZ_JWKS_URL": refused_url}, args=("--config", str(config)),
                       wait_ready=False) as refused:
            assert refused.process.wait(timeout=30) == 2
            lines = refused.logs().splitlines()
            assert len(lines) == 1 and lines[0].startswith("authz: AUTHZ_JWKS_URL: "), lines
            out.append(refused.logs())
    yield "\n".join(out)


def _cold_authz(env: dict[str, str], config: Path, jwks_url: str) -> list[str]:
    """What an authz whose JWKS at `jwks_url` never loads emits while answering
    jwks_unavailable, logs included (the failed fetches)."""
    out: list[str] = []
    with run_authz({**env, "AUTHZ_JWKS_URL": jwks_url}, args=("--config", str(config)),
                   wait_ready=False) as cold:
        wait_until(lambda: request(cold.http_port, "/healthz").status == 200,
                   what="second authz alive")
        token = _rs("a")
        response = _retry_check(cold.grpc_port, check_request(f"Bearer {token}"))
        assert reason_of(response) == Reason.JWKS_UNAVAILABLE.value
        out.append(response.SerializeToString().decode("latin-1"))
        out.append(cold.metrics())
        cold.stop()
        out.append(cold.logs())
    # The search below means something only if the failed fetches were logged.
    assert "JWKS fetch failed" in out[-1]
    return out


def _retry_check(port: int, data: bytes) -> CheckResponse:
    deadline = time.monotonic() + 60
    while True:
        try:
            return grpc_check(port, data)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_every_reason_was_exercised(emitted: str) -> None:
    counted = {line.split('reason="')[1].split('"')[0] for line in emitted.splitlines()
               if line.startswith("authz_checks_total{") and not line.endswith(" 0.0")}
    assert counted == {reason.value for reason in Reason}


def test_debug_logs_were_written(emitted: str) -> None:
    # The search below means something only if the debug decision lines are there.
    assert emitted.count('"msg": "decision"') >= len(ENVOY_CASES) + len(STRICT_CASES)


@pytest.mark.parametrize("needle", _needles())
def test_no_token_signature_or_secret_is_emitted(emitted: str, needle: str) -> None:
    assert needle not in emitted
