"""Identity providers on loopback (SPEC section 10): OIDC discovery (trailing slash, path
issuers, a document that lies about its issuer is never used), each issuer's source on its
own (a dead one blocks neither the others' Checks nor their refetches; readiness waits for
all), the unknown-kid refetch of the selected issuer only, and the `issuer` metric label."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from authz.core.decision import Reason
from authz.core.request import RequestView
from authz.keys.issuers import KeySources, key_sources
from authz.keys.store import KeyStore
from authz.service.checker import Checker
from authz.settings.load import load_settings
from authz.settings.model import Settings
from tests.jwks_server import JWKSServer, free_port, jwk, jwks, rsa_key, sign

KEY_A = rsa_key("contract-issuer-a")
KEY_B = ec.generate_private_key(ec.SECP256R1())
ROTATED = rsa_key("contract-issuer-rotated")
DISCOVERY = "/.well-known/openid-configuration"


def claims(iss: str) -> dict[str, Any]:
    return {"sub": "alice", "iss": iss, "exp": time.time() + 600}


def metric(name: str, issuer: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"issuer": issuer, **labels}) or 0.0


Scenario = Callable[[KeySources, KeyStore, Checker], Awaitable[None]]


def run(tmp_path: Path, issuers_yaml: str, scenario: Scenario, **env: str) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(issuers_yaml)

    async def main() -> None:
        settings: Settings = load_settings(str(config), None, env)
        store = KeyStore(settings)
        sources = key_sources(settings, store)
        assert sources is not None
        for source in sources.sources.values():  # a dead issuer refuses at once anyway
            source._io_timeout, source._total_timeout = 10.0, 20.0
        checker = Checker(settings, store, sources.refresh_unknown_kid)
        sources.start()
        try:
            await scenario(sources, store, checker)
        finally:
            await sources.stop()

    asyncio.run(main())


async def reason(checker: Checker, token: str) -> Reason:
    return (await checker.check(RequestView(authorization=token, source_ip="127.0.0.1"))).reason


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_discovery_with_a_trailing_slash_and_a_path_issuer(tmp_path: Path) -> None:
    with JWKSServer(jwks(jwk(KEY_A, "a"))) as a, JWKSServer(jwks(jwk(KEY_B, "b"))) as b:
        slash = a.origin + "/"
        realm = b.origin + "/realms/ams"  # Keycloak-style: a path, no trailing slash
        a.discovery(slash)
        b.discovery(realm)
        yaml_text = f"issuers:\n  - issuer: '{slash}'\n  - issuer: '{realm}'\n"

        async def scenario(sources: KeySources, store: KeyStore, checker: Checker) -> None:
            assert await sources.wait_ready(20)
            assert await reason(checker, sign("RS256", KEY_A, claims(slash), "a")) is Reason.OK
            assert await reason(checker, sign("ES256", KEY_B, claims(realm), "b")) is Reason.OK
            # The other spelling of each issuer is not the issuer.
            no_slash = sign("RS256", KEY_A, claims(a.origin), "a")
            assert await reason(checker, no_slash) is Reason.ISSUER_MISMATCH
            assert metric("authz_jwks_keys", slash) == 1
            assert metric("authz_jwks_keys", realm) == 1

        run(tmp_path, yaml_text, scenario)
        assert a.paths[:2] == [DISCOVERY, "/.well-known/jwks.json"]
        assert b.paths[:2] == ["/realms/ams" + DISCOVERY, "/.well-known/jwks.json"]


def test_a_discovery_document_naming_another_issuer_is_not_used(tmp_path: Path) -> None:
    with JWKSServer(jwks(jwk(KEY_A, "a"))) as liar, JWKSServer(jwks(jwk(KEY_B, "b"))) as honest:
        slash = liar.origin + "/"
        bare = honest.origin
        # One drops the trailing slash, the other adds one: each names another issuer.
        liar.discovery(slash, claimed=liar.origin)
        honest.discovery(bare, claimed=bare + "/")
        yaml_text = f"issuers:\n  - issuer: '{slash}'\n  - issuer: '{bare}'\n"

        async def scenario(sources: KeySources, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: metric("authz_jwks_refreshes_total", slash,
                                            result="failure") >= 2
                             and metric("authz_jwks_refreshes_total", bare,
                                        result="failure") >= 2)
            assert not sources.ready
            for tok in (sign("RS256", KEY_A, claims(slash), "a"),
                        sign("ES256", KEY_B, claims(bare), "b")):
                assert await reason(checker, tok) is Reason.JWKS_UNAVAILABLE
            # The JWKS the lying documents point to was never fetched.
            assert set(liar.paths) == {DISCOVERY} and set(honest.paths) == {DISCOVERY}
            # Corrected, it is used.
            liar.discovery(slash)
            honest.discovery(bare)
            assert await sources.wait_ready(20)
            assert await reason(checker, sign("RS256", KEY_A, claims(slash), "a")) is Reason.OK

        run(tmp_path, yaml_text, scenario)


def test_an_https_document_never_leads_to_an_http_jwks(tmp_path: Path) -> None:
    from tests.jwks_server import loopback_tls

    context, ca_file = loopback_tls(tmp_path)
    with JWKSServer(jwks(jwk(KEY_A, "a")), tls=context) as tls, JWKSServer(
        jwks(jwk(KEY_A, "a"))
    ) as plain:
        issuer = tls.origin + "/"
        tls.discovery(issuer, jwks_uri=plain.url)

        async def scenario(sources: KeySources, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: metric("authz_jwks_refreshes_total", issuer,
                                            result="failure") >= 1)
            assert not sources.ready and plain.requests == 0
            tls.discovery(issuer)
            assert await sources.wait_ready(20)

        run(tmp_path, f"issuers: [{{issuer: '{issuer}'}}]\n", scenario,
            AUTHZ_JWKS_CA_FILE=str(ca_file))


def test_a_dead_issuer_blocks_nothing_of_the_others(tmp_path: Path) -> None:
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}/"
    with JWKSServer(jwks(jwk(KEY_A, "a"))) as a:
        live = a.origin + "/"
        a.discovery(live)
        yaml_text = (f"issuers:\n  - issuer: '{live}'\n"
                     f"  - issuer: '{dead}'\n    jwks_url: 'http://127.0.0.1:{dead_port}/k'\n")

        async def scenario(sources: KeySources, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: sources.sources[live].ready)
            assert not sources.ready  # /readyz waits for every issuer
            assert await reason(checker, sign("RS256", KEY_A, claims(live), "a")) is Reason.OK
            assert await reason(checker, sign("RS256", KEY_A, claims(dead), "a")) is (
                Reason.JWKS_UNAVAILABLE)
            assert metric("authz_jwks_consecutive_failures", dead) >= 1
            assert metric("authz_jwks_consecutive_failures", live) == 0
            # The live issuer rotates: its unknown kid refetches its own keys only, at once.
            fetches = len(a.paths)
            a.body = jwks(jwk(ROTATED, "rotated"))
            started = time.monotonic()
            tok = sign("RS256", ROTATED, claims(live), "rotated")
            assert await reason(checker, tok) is Reason.OK
            assert time.monotonic() - started < 60  # at once, not at the 300 s refresh
            assert a.paths[fetches:] == [DISCOVERY, "/.well-known/jwks.json"]
            # The dead issuer comes up: ready, its tokens pass, the live one untouched.
            with JWKSServer(jwks(jwk(KEY_B, "b")), port=dead_port):
                assert await sources.wait_ready(30)
                assert await reason(checker, sign("ES256", KEY_B, claims(dead), "b")) is (
                    Reason.OK)
                assert await reason(checker, tok) is Reason.OK

        run(tmp_path, yaml_text, scenario, AUTHZ_JWKS_REFRESH_SECONDS="300")


def test_an_unknown_kid_of_one_issuer_does_not_refetch_another(tmp_path: Path) -> None:
    with JWKSServer(jwks(jwk(KEY_A, "same"))) as a, JWKSServer(jwks(jwk(KEY_B, "same"))) as b:
        yaml_text = (f"issuers:\n  - {{issuer: a, jwks_url: '{a.url}'}}\n"
                     f"  - {{issuer: b, jwks_url: '{b.url}'}}\n")

        async def scenario(sources: KeySources, store: KeyStore, checker: Checker) -> None:
            assert await sources.wait_ready(20)
            a_before, b_before = a.requests, b.requests
            # The kid both publish, signed by the other issuer's key: never verifies.
            assert await reason(checker, sign("ES256", KEY_B, claims("a"), "same")) is (
                Reason.ALG_NOT_ALLOWED)
            assert await reason(checker, sign("RS256", KEY_A, claims("b"), "same")) is (
                Reason.ALG_NOT_ALLOWED)
            assert await reason(checker, sign("RS256", KEY_A, claims("a"), "same")) is Reason.OK
            assert await reason(checker, sign("RS256", KEY_A, claims("a"), "new")) is (
                Reason.UNKNOWN_KID)
            assert (a.requests, b.requests) == (a_before + 1, b_before)

        run(tmp_path, yaml_text, scenario)
