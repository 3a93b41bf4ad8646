"""The Ant Media webhook door through a real socket, with the request Ant Media's Apache
HttpClient sends (AcceptOnlyStreamsWithWebhook: Gson's compact JSON, Content-Length)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from authz.core.mint import mint_hmac
from authz.fronts.webhook import MAX_BODY_BYTES, WebhookFront
from authz.keys.store import KeyStore
from authz.service.checker import Checker
from authz.settings.model import Settings

STREAM_SECRET = "stream-secret-of-at-least-32-bytes-long!"
REST_SECRET = "rest-secret-of-at-least-32-bytes-long!!"
NOW = 1_800_000_000.0
ON = Settings(
    hs256_secret=REST_SECRET,
    stream_secret=STREAM_SECRET,
    play_jwt_enabled=True,
    publish_jwt_enabled=True,
)
OFF = Settings(hs256_secret=REST_SECRET, stream_secret=STREAM_SECRET)

Reply = tuple[int, dict[str, str], Any]


def token(stream_id: str = "stream1", kind: str = "publish", **extra: Any) -> str:
    claims = {"streamId": stream_id, "type": kind, "exp": NOW + 600, **extra}
    secret = extra.pop("secret", STREAM_SECRET)
    claims.pop("secret", None)
    return mint_hmac(claims, secret.encode())


def ams_publish_body(stream_id: str, tok: str | None) -> bytes:
    # What AcceptOnlyStreamsWithWebhook builds: appName, name, streamId, mode, then the
    # optional token, subscriberId, subscriberCode, metaData and queryParams (a Java map's
    # toString; Gson escapes '=' as \u003d).
    body: dict[str, str] = {"appName": "LiveApp", "name": stream_id, "streamId": stream_id,
                            "mode": "live"}
    if tok is not None:
        body["token"] = tok
    body["queryParams"] = "{token=" + (tok or "") + "}"
    return json.dumps(body, separators=(",", ":")).replace("=", "\\u003d").encode()


def ams_play_body(stream_id: str, tok: str) -> bytes:
    return json.dumps({
        "streamId": stream_id, "mode": "play", "appName": "LiveApp",
        "origin": "https://example.com", "token": tok, "subscriberCode": "",
        "subscriberId": "", "metaData": {"key": "value"}, "ipAddress": "127.0.0.1",
    }).encode()


def request(path: str, body: bytes, method: str = "POST", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nHost: 127.0.0.1\r\nConnection: Keep-Alive\r\n"
        f"User-Agent: Apache-HttpClient/4.5.13 (Java/17)\r\nAccept-Encoding: gzip,deflate\r\n"
        f"{extra}\r\n"
    )
    return head.encode() + body


async def _exchange(front: WebhookFront, raw: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, json.loads(body)


def exchange(raw: bytes, settings: Settings = ON) -> Reply:
    async def run() -> Reply:
        checker = Checker(settings, KeyStore(settings), clock=lambda: NOW)
        front = WebhookFront("127.0.0.1:0", lambda view: checker.check(view, "webhook"))
        await front.start()
        try:
            return await _exchange(front, raw)
        finally:
            await front.stop(5.0)

    return asyncio.run(run())


def test_publish_with_a_good_token_is_200() -> None:
    status, headers, body = exchange(request("/publish", ams_publish_body("s1", token("s1"))))
    assert status == 200 and body["reason"] == "ok"
    assert headers["connection"] == "close"


def test_play_with_a_good_token_is_200() -> None:
    status, _, body = exchange(request("/play", ams_play_body("s1", token("s1", "play"))))
    assert (status, body["reason"]) == (200, "ok")


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/publish", ams_publish_body("s1", token("s1", "play")), "stream_mismatch"),
        ("/play", ams_play_body("s1", token("s1", "publish")), "stream_mismatch"),
        ("/publish", ams_publish_body("s1", token("s2")), "stream_mismatch"),
        ("/publish", ams_publish_body("s1", token("s1", exp=NOW - 3600)), "expired"),
        ("/publish", ams_publish_body("s1", token("s1", secret=REST_SECRET)), "bad_signature"),
        ("/publish", ams_publish_body("s1", "garbage"), "malformed"),
        ("/publish", ams_publish_body("s1", None), "missing_token"),
        ("/publish", b'{"streamId": null, "token": "x"}', "no_stream_id"),
    ],
)
def test_refusals_are_403_with_the_reason(path: str, body: bytes, reason: str) -> None:
    status, headers, answer = exchange(request(path, body))
    assert status == 403
    assert answer == {"error": "forbidden", "reason": reason}
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"text"', b"", b'{"streamId": 5, "token": "x"}',
     b'{"streamId": "a", "streamId": "b"}', b"x" * (MAX_BODY_BYTES + 1)],
)
def test_unreadable_bodies_are_400_malformed(body: bytes) -> None:
    status, _, answer = exchange(request("/publish", body))
    assert (status, answer) == (400, {"error": "bad_request", "reason": "malformed"})


def test_switch_off_is_200_jwt_disabled_for_every_body() -> None:
    for path, body in [("/publish", ams_publish_body("s1", "junk")), ("/play", b"not json"),
                       ("/publish", b"x" * (MAX_BODY_BYTES + 1))]:
        status, _, answer = exchange(request(path, body), OFF)
        assert (status, answer["reason"]) == (200, "jwt_disabled")


def test_the_body_limit_is_64_kib() -> None:
    body = ams_publish_body("s1", token("s1"))
    padded = body[:-1] + b',"pad":"' + b"p" * (MAX_BODY_BYTES - len(body) - 9) + b'"}'
    assert len(padded) == MAX_BODY_BYTES
    assert exchange(request("/publish", padded))[0] == 200


def test_latin1_bodies_are_read() -> None:
    body = ams_publish_body("s1", token("s1"))[:-1] + ',"metaData":"caf\xe9"}'.encode("latin-1")
    assert exchange(request("/publish", body))[0] == 200


@pytest.mark.parametrize("path", ["/", "/publish/", "/other", "/Publish"])
def test_other_paths_are_404(path: str) -> None:
    status, _, answer = exchange(request(path, b"{}"))
    assert (status, answer) == (404, {"error": "not_found"})


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405_with_allow(method: str) -> None:
    status, headers, _ = exchange(request("/publish", b"", method=method))
    assert status == 405 and headers["allow"] == "POST"


def test_chunked_bodies_are_unreadable() -> None:
    raw = (b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"2\r\n{}\r\n0\r\n\r\n")
    assert exchange(raw)[0] == 400


def test_garbage_request_lines_are_400() -> None:
    assert exchange(b"hello\r\n\r\n")[0] == 400


def test_decisions_are_counted_as_webhook_checks() -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    by_transport = ("authz_checks_by_transport_total", {"transport": "webhook"})
    mismatch = ("authz_checks_total", {"decision": "deny", "reason": "stream_mismatch"})
    before = sample(*by_transport), sample(*mismatch)
    exchange(request("/publish", ams_publish_body("s1", token("s2"))))
    exchange(request("/publish", b"nope"))
    assert sample(*by_transport) == before[0] + 2
    assert sample(*mismatch) == before[1] + 1


def test_no_token_or_secret_is_logged_or_answered(caplog: pytest.LogCaptureFixture) -> None:
    tokens = [token("s1"), token("s2"), token("s1", exp=NOW - 9999)]
    answers = []
    with caplog.at_level(logging.DEBUG):
        for tok in tokens:
            answers.append(json.dumps(exchange(request("/publish", ams_publish_body("s1", tok)))))
    for secret in (STREAM_SECRET, REST_SECRET, *tokens):
        assert secret not in caplog.text
        assert all(secret not in answer for answer in answers)


def test_the_service_serves_and_drains_the_webhook_door() -> None:
    from dataclasses import replace

    from authz.service.server import Service
    from tests.harness import free_port

    settings = replace(
        ON,
        grpc_address=f"127.0.0.1:{free_port()}",
        http_address=f"127.0.0.1:{free_port()}",
        ams_webhook_address=f"127.0.0.1:{free_port()}",
        drain_delay_seconds=0,
    )

    async def run() -> Reply:
        service = Service(settings)
        await service.start()
        try:
            assert service.webhook_front is not None
            # The service's clock is the real one: a token valid from now on.
            import time

            fresh = mint_hmac(
                {"streamId": "s1", "type": "publish", "exp": time.time() + 600},
                STREAM_SECRET.encode(),
            )
            return await _exchange(
                service.webhook_front, request("/publish", ams_publish_body("s1", fresh))
            )
        finally:
            await service.drain()

    status, _, body = asyncio.run(run())
    assert (status, body["reason"]) == (200, "ok")
