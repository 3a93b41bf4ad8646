"""`authz token` and `authz check`: tokens that the core accepts, Checks against a real authz."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.cli.main import main
from authz.cli.token import TokenOptionError, parse_claim, parse_duration
from authz.core.decide import decide
from authz.core.decision import Reason
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.keys.snapshot import KeySnapshot
from authz.settings.load import load_settings
from tests.credentials import OTHER_SECRET, SECRET
from tests.harness import (
    ROOT,
    Authz,
    echo_upstream,
    free_port,
    request,
    run_authz,
    run_envoy,
    wait_until,
)
from tests.jwks_server import JWKSServer

SECOND_SECRET = "a-second-secret-that-is-32-bytes-long!"
POLICIES = """
policies:
  admin:
    required_claims:
      - claim: role
        one_of: [admin, publisher]
    forward_claims:
      role: x-jwt-role
  office:
    allowed_cidrs: [10.0.0.0/8]
"""


@pytest.fixture(autouse=True)
def _no_authz_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands read AUTHZ_* like `serve`; a developer's own settings must not leak in.
    for name in list(os.environ):
        if name.startswith("AUTHZ_"):
            monkeypatch.delenv(name)


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def mint(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["token", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1, "prints only the token"
    return lines[0]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- authz token ----


class TestToken:
    def test_round_trips_through_the_core_with_the_routes_policy(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\n{POLICIES}")
        token = mint(capsys, "--config", config, "--sub", "alice", "--claim", "role=publisher")
        settings = load_settings(config, None, {})
        keys = KeySnapshot.build(secrets=settings.hs256_secrets)
        view = RequestView(token, "127.0.0.1", context={"policy": "admin"})
        decision = decide(view, keys, settings, time.time())
        assert decision.reason is Reason.OK
        assert dict(decision.headers_to_set) == {"x-jwt-sub": "alice", "x-jwt-role": "publisher"}
        # The same token without the role fails the same policy: the claim is what passed it.
        plain = mint(capsys, "--config", config, "--sub", "alice")
        refused = decide(RequestView(plain, "127.0.0.1", context={"policy": "admin"}),
                         keys, settings, time.time())
        assert refused.reason is Reason.INSUFFICIENT_SCOPE

    def test_signed_with_the_first_secret_of_the_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        secrets = write(tmp_path, "secrets", f"{SECOND_SECRET}\n{SECRET}\n")
        monkeypatch.setenv("AUTHZ_HS256_SECRET_FILE", secrets)
        token = mint(capsys, "--sub", "bob")
        settings = load_settings(None, None, {"AUTHZ_HS256_SECRET_FILE": secrets})
        view = RequestView(token, None)
        only_first = KeySnapshot.build(secrets=(SECOND_SECRET.encode(),))
        only_second = KeySnapshot.build(secrets=(SECRET.encode(),))
        assert decide(view, only_first, settings, time.time()).reason is Reason.OK
        assert decide(view, only_second, settings, time.time()).reason is Reason.BAD_SIGNATURE

    def test_reads_the_secret_from_ams_properties(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        props = write(tmp_path, "red5-web.properties", f"settings.jwtSecretKey={SECRET}\n")
        token = mint(capsys, "--ams-properties", props, "--sub", "carol")
        assert token == mint_hmac(payload(token), SECRET.encode())

    def test_ttl_iat_exp(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AUTHZ_HS256_SECRET", SECRET)
        before = int(time.time())
        default = payload(mint(capsys, "--sub", "x"))
        week = payload(mint(capsys, "--sub", "x", "--ttl", "7d"))
        after = int(time.time())
        assert before <= default["iat"] <= after
        assert default["exp"] - default["iat"] == 3600
        assert week["exp"] - week["iat"] == 7 * 86400

    def test_claim_types_iss_and_aud(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AUTHZ_HS256_SECRET", SECRET)
        claims = payload(mint(
            capsys, "--sub", "x", "--iss", "https://issuer.example/", "--aud", "a", "--aud", "b",
            "--claim", "role=admin", "--claim", "level=3", "--claim", "ok=true",
            "--claim", 'scope=["publish","play"]', "--claim", 'code="007"',
        ))
        assert claims["iss"] == "https://issuer.example/"
        assert claims["aud"] == ["a", "b"]
        assert (claims["role"], claims["level"], claims["ok"]) == ("admin", 3, True)
        assert (claims["scope"], claims["code"]) == (["publish", "play"], "007")

    def test_iss_and_aud_default_to_what_the_settings_require(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = {"AUTHZ_HS256_SECRET": SECRET, "AUTHZ_ISSUER": "https://i.example/",
               "AUTHZ_AUDIENCE": "media-api,other"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        token = mint(capsys, "--sub", "x")
        assert (payload(token)["iss"], payload(token)["aud"]) == ("https://i.example/", "media-api")
        settings = load_settings(None, None, env)
        keys = KeySnapshot.build(secrets=settings.hs256_secrets)
        assert decide(RequestView(token, None), keys, settings, time.time()).reason is Reason.OK

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("2w", 1209600),
         ("1h30m", 5400), ("3600", 3600), (" 1H ", 3600)],
    )
    def test_parse_duration(self, text: str, seconds: int) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "1.5h", "h", "1y", "1h 30m", "10 s"])
    def test_parse_duration_rejects(self, text: str) -> None:
        with pytest.raises(TokenOptionError):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("text", "claim"),
        [("role=admin", ("role", "admin")), ("n=3", ("n", 3)), ("f=2.5", ("f", 2.5)),
         ("b=false", ("b", False)), ("z=null", ("z", None)), ('s="3"', ("s", "3")),
         ("l=[1,2]", ("l", [1, 2])), ('o={"a":1}', ("o", {"a": 1})), ("e=", ("e", "")),
         ("url=https://x.example/?a=b", ("url", "https://x.example/?a=b")),
         ("word=True", ("word", "True"))],
    )
    def test_parse_claim(self, text: str, claim: tuple[str, Any]) -> None:
        assert parse_claim(text) == claim

    @pytest.mark.parametrize("text", ["role", "=admin", "sub=x", "exp=1", "iat=1", "aud=a"])
    def test_parse_claim_rejects(self, text: str) -> None:
        with pytest.raises(TokenOptionError):
            parse_claim(text)

    @pytest.mark.parametrize(
        "args",
        [["--sub", "x", "--ttl", "soon"], ["--sub", "x", "--claim", "noequals"],
         ["--sub", "x", "--claim", "exp=5"], ["--ttl", "1h"]],
    )
    def test_bad_options_exit_2(
        self, args: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("AUTHZ_HS256_SECRET", SECRET)
        with pytest.raises(SystemExit) as exited:
            main(["token", *args])
        assert exited.value.code == 2
        assert capsys.readouterr().out == ""

    def test_duplicate_claim_exits_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("AUTHZ_HS256_SECRET", SECRET)
        assert main(["token", "--sub", "x", "--claim", "a=1", "--claim", "a=2"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "given twice" in err

    def test_no_secret_exits_2_with_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("AUTHZ_JWKS_URL", "https://issuer.example")
        assert main(["token", "--sub", "x"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.splitlines()) == 1 and "no HS256 secret" in err

    def test_invalid_settings_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["token", "--sub", "x"])  # no key at all: the settings themselves are invalid
        assert exited.value.code == 2
        assert "AUTHZ_JWT_ENABLED" in capsys.readouterr().err

    def test_composes_in_a_shell(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
        env["AUTHZ_HS256_SECRET"] = SECRET
        done = subprocess.run(
            [sys.executable, "-m", "authz.cli", "token", "--sub", "me"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
        )
        assert done.stderr == ""
        token = done.stdout.removesuffix("\n")
        assert "\n" not in token and token.count(".") == 2
        assert payload(token)["sub"] == "me"


# ---- authz serve ----


def _log_entries(authz: Authz) -> list[dict[str, Any]]:
    entries = []
    for line in authz.logs().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _started(authz: Authz, processes: int = 1) -> bool:
    """`processes` serving lines are logged, or the process is gone."""
    serving = [e for e in _log_entries(authz) if e.get("msg") == "serving"]
    return authz.process.poll() is not None or len(serving) >= processes


def _warnings(authz: Authz, setting: str) -> list[str]:
    return [
        e["msg"] for e in _log_entries(authz)
        if e.get("level") == "warning" and str(e.get("msg", "")).startswith(f"{setting}: ")
    ]


class TestServe:
    @pytest.mark.parametrize("leeway", ["1e15", "301"])
    def test_a_leeway_above_the_cap_exits_2_naming_the_setting(self, leeway: str) -> None:
        with run_authz({"AUTHZ_LEEWAY_SECONDS": leeway}, wait_ready=False) as authz:
            wait_until(lambda: _started(authz), what="authz to exit or serve")
            assert authz.process.poll() == 2  # exited at once, never served
            lines = authz.logs().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("authz: AUTHZ_LEEWAY_SECONDS: must be at most 300 seconds")

    def test_jwt_off_is_warned_once_per_pod(self) -> None:
        with run_authz({"AUTHZ_JWT_ENABLED": "false"}, args=("--workers", "2")) as authz:
            wait_until(lambda: _started(authz, processes=2), what="both workers serving")
            warned = _warnings(authz, "AUTHZ_JWT_ENABLED")
            assert authz.stop() == 0
        assert len(warned) == 1, warned
        assert "jwt_disabled" in warned[0]

    def test_a_jwks_without_issuer_or_audience_is_warned(self) -> None:
        with JWKSServer() as keys, run_authz(
            {"AUTHZ_JWKS_URL": keys.url}, wait_ready=False
        ) as authz:
            wait_until(lambda: _started(authz), what="authz serving")
            warned = _warnings(authz, "AUTHZ_JWKS_URL")
            assert authz.stop() == 0
        assert len(warned) == 1, warned
        assert "RFC 8725" in warned[0]


# ---- authz check ----


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authz]:
    config = tmp_path_factory.mktemp("check") / "authz.yaml"
    config.write_text(POLICIES)
    with run_authz(args=("--config", str(config))) as running:
        yield running


def token(**claims: Any) -> str:
    now = int(time.time())
    return mint_hmac({"sub": "alice", "iat": now, "exp": now + 600, **claims}, SECRET.encode())


def check(
    authz: Authz, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["check", "--target", f"127.0.0.1:{authz.grpc_port}", *args])
    out, err = capsys.readouterr()
    return code, out, err


def fields(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key, []).append(value.strip())
    return found


class TestCheck:
    def test_allow_exits_0_and_shows_headers_never_the_token(
        self, authz: Authz, capsys: pytest.CaptureFixture[str]
    ) -> None:
        tok = token()
        code, out, _ = check(authz, capsys, "--token", tok, "--header", "X-JWT-Role: admin")
        assert code == 0
        shown = fields(out)
        assert shown["decision"] == ["allow"] and shown["reason"] == ["ok"]
        assert shown["status"][0].startswith("200")
        assert shown["set"] == ["x-jwt-sub: alice  (to the upstream)"]
        assert shown["removed"] == ["x-jwt-role"]
        assert tok not in out and tok.split(".")[2] not in out

    def test_bearer_form_through_header(
        self, authz: Authz, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = check(authz, capsys, "--header", f"Authorization: Bearer {token()}")
        assert code == 0 and fields(out)["reason"] == ["ok"]

    @pytest.mark.parametrize(
        ("args", "status", "reason"),
        [
            ((), "401", "missing_token"),
            (("--token", "not-a-jwt"), "401", "malformed"),
            (("--token", mint_hmac({"sub": "a", "exp": 1}, SECRET.encode())), "401", "expired"),
            (("--token", mint_hmac({"sub": "a"}, OTHER_SECRET)), "401", "bad_signature"),
        ],
    )
    def test_deny_exits_1(
        self, authz: Authz, capsys: pytest.CaptureFixture[str],
        args: tuple[str, ...], status: str, reason: str,
    ) -> None:
        code, out, _ = check(authz, capsys, *args)
        assert code == 1
        shown = fields(out)
        assert shown["decision"] == ["deny"]
        assert (shown["status"], shown["reason"]) == ([status], [reason])
        assert json.loads(out.split("body:", 1)[1]) == {"error": "unauthorized", "reason": reason}
        assert any(value.startswith("www-authenticate: Bearer") for value in shown["set"])

    @pytest.mark.parametrize(
        ("context", "claims", "code", "reason"),
        [
            ("policy=admin", {}, 1, "insufficient_scope"),
            ("policy=admin", {"role": "viewer"}, 1, "insufficient_scope"),
            ("policy=admin", {"role": "publisher"}, 0, "ok"),
            ("policy=nope", {"role": "admin"}, 1, "unknown_policy"),
            ("other=ignored", {}, 0, "ok"),
        ],
    )
    def test_route_policy_through_context(
        self, authz: Authz, capsys: pytest.CaptureFixture[str],
        context: str, claims: dict[str, Any], code: int, reason: str,
    ) -> None:
        got, out, _ = check(authz, capsys, "--token", token(**claims), "--context", context)
        assert (got, fields(out)["reason"]) == (code, [reason])

    def test_policy_forwards_claims(
        self, authz: Authz, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = check(
            authz, capsys, "--token", token(role="admin"), "--context", "policy=admin"
        )
        assert code == 0
        assert "x-jwt-role: admin  (to the upstream)" in fields(out)["set"]

    @pytest.mark.parametrize(("ip", "code", "reason"), [
        ("10.1.2.3", 0, "ok"), ("203.0.113.9", 1, "ip_not_allowed"), ("::ffff:10.0.0.1", 0, "ok"),
    ])
    def test_source_ip_with_a_cidr_policy(
        self, authz: Authz, capsys: pytest.CaptureFixture[str], ip: str, code: int, reason: str
    ) -> None:
        got, out, _ = check(
            authz, capsys, "--token", token(), "--context", "policy=office", "--source-ip", ip
        )
        assert (got, fields(out)["reason"]) == (code, [reason])

    def test_token_from_stdin(
        self, authz: Authz, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(token() + "\n"))
        code, out, _ = check(authz, capsys, "--token", "-")
        assert code == 0 and fields(out)["reason"] == ["ok"]

    def test_exit_codes_of_the_real_command(self, authz: Authz) -> None:
        base = [sys.executable, "-m", "authz.cli", "check",
                "--target", f"127.0.0.1:{authz.grpc_port}"]
        allowed = subprocess.run([*base, "--token", token()], capture_output=True, timeout=30)
        denied = subprocess.run(base, capture_output=True, timeout=30)
        assert (allowed.returncode, denied.returncode) == (0, 1)

    def test_unreachable_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        port = free_port()
        started = time.monotonic()
        code = main(["check", "--target", f"127.0.0.1:{port}", "--token", token(),
                     "--timeout", "120"])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert f"127.0.0.1:{port}" in err and "UNAVAILABLE" in err
        # At once, not at the 120 s deadline, with room for a loaded machine.
        assert time.monotonic() - started < 60

    def test_silent_target_times_out_with_exit_2(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # A socket that accepts connections (the kernel's backlog) but never speaks gRPC.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            started = time.monotonic()
            code = main(["check", "--target", f"127.0.0.1:{port}", "--timeout", "0.5"])
            elapsed = time.monotonic() - started
        assert code == 2
        assert "DEADLINE_EXCEEDED" in capsys.readouterr().err
        assert elapsed < 30  # the silent target would hold it for ever

    @pytest.mark.parametrize(
        "args",
        [["--header", "no colon"], ["--context", "novalue"], ["--target", "localhost"],
         ["--target", "::1:9001"], ["--timeout", "soon"]],
    )
    def test_bad_options_exit_2(self, args: list[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["check", *args])
        assert exited.value.code == 2

    def test_token_and_authorization_header_together_exit_2(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["check", "--token", "a", "--header", "Authorization: b"])
        assert code == 2 and "not both" in capsys.readouterr().err

    def test_bad_source_ip_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check", "--source-ip", "nowhere", "--target", "127.0.0.1:1"]) == 2
        assert "--source-ip" in capsys.readouterr().err


# ---- the shipped examples together: examples/local.yaml behind envoy.yaml ----


@pytest.mark.e2e
def test_local_example_and_envoy_yaml_agree_on_strict_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens come from `authz token` on the same settings as the server: local.yaml with the
    # harness' secret in the environment (later wins). The HTTP door's fixed port is reset.
    local = str(ROOT / "examples" / "local.yaml")
    monkeypatch.setenv("AUTHZ_HS256_SECRET", SECRET)
    plain = mint(capsys, "--config", local, "--sub", "me")
    publisher = mint(capsys, "--config", local, "--sub", "me", "--claim", "role=publisher")
    with echo_upstream() as upstream, run_authz(
        env={"AUTHZ_HTTP_AUTHZ_ADDRESS": ""}, args=("--config", local)
    ) as authz, run_envoy({"authz": authz.grpc_port, "ant_media": upstream}) as envoy:
        strict = "/StrictApp/rest/v2/broadcasts/list/0/10"
        live = "/LiveApp/rest/v2/broadcasts/list/0/10"
        refused = request(envoy.port, strict, {"authorization": plain})
        assert (refused.status, refused.json()["reason"]) == (403, "insufficient_scope")
        assert request(envoy.port, strict, {"authorization": publisher}).status == 200
        assert request(envoy.port, live, {"authorization": plain}).status == 200
        # `authz check` with the route's context gives the answer Envoy enforced.
        code = main(["check", "--target", f"127.0.0.1:{authz.grpc_port}", "--token", plain,
                     "--context", "policy=admin"])
        assert code == 1 and "reason:   insufficient_scope" in capsys.readouterr().out
