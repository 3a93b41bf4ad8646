"""Token sources per policy and Ant Media stream tokens (SPEC sections 5, 8 item 4, 9):
the core rules, the settings that feed them, and both Envoy doors deciding alike."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.core.decide import decide
from authz.core.decision import Decision, Reason, status_of
from authz.core.extract import (
    TokenSource,
    cookie_value,
    form_decode,
    parse_token_source,
    query_value,
)
from authz.core.mint import mint_hmac
from authz.core.policy import Policy
from authz.core.request import RequestView, WebhookAsk
from authz.core.stream_check import StreamKeys
from authz.core.verify import TokenError
from authz.fronts import grpc as grpc_front
from authz.fronts import http as http_front
from authz.keys.snapshot import STREAM_ALGS, KeySnapshot
from authz.keys.store import KeyStore
from authz.observability import CHECKS_BY_REASON
from authz.service.checker import Checker
from authz.settings.errors import SettingsError
from authz.settings.load import load_settings
from authz.settings.model import Settings

REST_SECRET = "rest-secret-of-at-least-32-bytes-long!!"
STREAM_SECRET = "stream-secret-of-at-least-32-bytes-long!"
CLUSTER_SECRET = "cluster-secret-of-at-least-32-bytes-long"
NOW = 1_800_000_000.0
PATH = "/LiveApp/streams/stream1.m3u8"
PLAY = {"stream": "play"}
SETTINGS = Settings(
    hs256_secret=REST_SECRET,
    stream_secret=STREAM_SECRET,
    play_jwt_enabled=True,
    publish_jwt_enabled=True,
)
REST_KEYS = KeySnapshot.build(secrets=(REST_SECRET.encode(),))
STREAMS = StreamKeys(
    KeySnapshot.build((STREAM_SECRET.encode(),), hmac_algs=STREAM_ALGS, purpose="stream"),
    KeySnapshot.build((CLUSTER_SECRET.encode(),), hmac_algs=STREAM_ALGS, purpose="cluster"),
)


def stream_token(
    stream_id: str | None = "stream1", kind: str | None = "play", secret: str = STREAM_SECRET,
    **extra: Any,
) -> str:
    claims: dict[str, Any] = {"streamId": stream_id, "type": kind, "exp": NOW + 600, **extra}
    return mint_hmac({k: v for k, v in claims.items() if v is not None}, secret.encode())


def rest_token(secret: str = REST_SECRET) -> str:
    return mint_hmac({"sub": "alice", "exp": NOW + 600}, secret.encode())


def play(
    path: str = PATH,
    method: str = "GET",
    authorization: str | None = None,
    settings: Settings = SETTINGS,
    streams: StreamKeys = STREAMS,
    **kw: Any,
) -> Decision:
    view = RequestView(authorization, "203.0.113.9", path=path, method=method, context=PLAY, **kw)
    return decide(view, REST_KEYS, settings, NOW, streams=streams)


def webhook(kind: str, stream_id: str | None, token: str | None, **kw: Any) -> Decision:
    ask = WebhookAsk(kind, stream_id, token, **kw)  # type: ignore[arg-type]
    view = RequestView(None, "127.0.0.1", path=f"/{kind}", method="POST", webhook=ask)
    return decide(view, REST_KEYS, kw.pop("settings", SETTINGS), NOW, streams=STREAMS)


# ---- the reason table ----


def test_new_reasons_are_403() -> None:
    for reason in (Reason.STREAM_MISMATCH, Reason.NO_STREAM_ID, Reason.METHOD_NOT_ALLOWED):
        assert status_of(reason) == 403
        assert reason in CHECKS_BY_REASON  # the metric labels follow the enum


# ---- play at the gateway ----


def test_play_token_in_the_query_allows_and_names_the_stream() -> None:
    decision = play(f"{PATH}?token={stream_token()}")
    assert decision.reason is Reason.OK
    assert ("x-jwt-stream-id", "stream1") in decision.headers_to_set
    assert decision.query_parameters_to_remove == ("token",)


def test_play_token_in_the_authorization_header_allows() -> None:
    decision = play(authorization=stream_token())
    assert decision.reason is Reason.OK
    assert decision.query_parameters_to_remove == ()


def test_play_token_in_both_places_is_malformed() -> None:
    token = stream_token()
    assert play(f"{PATH}?token={token}", authorization=token).reason is Reason.MALFORMED


def test_play_token_repeated_in_the_query_is_malformed() -> None:
    token = stream_token()
    assert play(f"{PATH}?token={token}&token={token}").reason is Reason.MALFORMED


def test_head_is_checked_like_get() -> None:
    assert play(f"{PATH}?token={stream_token()}", method="HEAD").reason is Reason.OK
    assert play(method="HEAD").reason is Reason.MISSING_TOKEN


def test_options_passes_untouched() -> None:
    decision = play(method="OPTIONS", jwt_headers=("x-jwt-stream-id",))
    assert decision.reason is Reason.JWT_DISABLED and decision.allowed
    assert decision.headers_to_set == ()
    assert decision.headers_to_remove == ("x-jwt-stream-id",)  # spoofing still stripped


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "get"])
def test_other_methods_are_refused(method: str) -> None:
    decision = play(f"{PATH}?token={stream_token()}", method=method)
    assert decision.reason is Reason.METHOD_NOT_ALLOWED and decision.status == 403


def test_switch_off_passes_reads_of_every_stream_route_and_still_refuses_writes() -> None:
    off = Settings(hs256_secret=REST_SECRET)
    for method in ("GET", "HEAD", "OPTIONS"):
        decision = play(f"{PATH}?token=junk", method=method, settings=off)
        assert decision.reason is Reason.JWT_DISABLED
        # Not read, so not removed: Ant Media's own check may still want it.
        assert decision.query_parameters_to_remove == ()
    for method in ("POST", "PUT", "DELETE", "PATCH", "get"):
        assert play(PATH, method=method, settings=off).reason is Reason.METHOD_NOT_ALLOWED


def test_missing_token() -> None:
    decision = play()
    assert decision.reason is Reason.MISSING_TOKEN and decision.status == 401


def test_no_stream_id() -> None:
    decision = play(f"/LiveApp/streams/?token={stream_token()}")
    assert decision.reason is Reason.NO_STREAM_ID and decision.status == 403


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (stream_token("other"), Reason.STREAM_MISMATCH),
        (stream_token(kind="publish"), Reason.STREAM_MISMATCH),
        (stream_token(kind=None), Reason.STREAM_MISMATCH),
        (stream_token(stream_id=None), Reason.STREAM_MISMATCH),
        (stream_token(exp=NOW - 3600), Reason.EXPIRED),
        (stream_token(exp=None), Reason.MISSING_EXP),
        (stream_token(secret="another-secret-of-at-least-32-bytes!!"), Reason.BAD_SIGNATURE),
        ("not.a.jwt!", Reason.MALFORMED),
        (mint_hmac({"streamId": "stream1", "type": "play", "exp": NOW + 60},
                   (STREAM_SECRET * 2).encode(), alg="HS512"), Reason.ALG_NOT_ALLOWED),
    ],
)
def test_play_refusals(token: str, reason: Reason) -> None:
    assert play(f"{PATH}?token={token}").reason is reason


def test_the_rest_secret_never_verifies_a_stream_token() -> None:
    forged = stream_token(secret=REST_SECRET)
    assert play(f"{PATH}?token={forged}").reason is Reason.BAD_SIGNATURE


def test_the_stream_secret_never_verifies_a_rest_token() -> None:
    view = RequestView(rest_token(STREAM_SECRET), "203.0.113.9", path="/LiveApp/rest/v2/x")
    assert decide(view, REST_KEYS, SETTINGS, NOW, streams=STREAMS).reason is Reason.BAD_SIGNATURE
    good = RequestView(rest_token(), "203.0.113.9", path="/LiveApp/rest/v2/x")
    assert decide(good, REST_KEYS, SETTINGS, NOW, streams=STREAMS).reason is Reason.OK


def test_a_stream_token_is_refused_on_rest_routes_and_a_rest_token_on_stream_routes() -> None:
    view = RequestView(stream_token(), "203.0.113.9", path="/LiveApp/rest/v2/x")
    assert decide(view, REST_KEYS, SETTINGS, NOW, streams=STREAMS).reason is Reason.BAD_SIGNATURE
    assert play(authorization=rest_token()).reason is Reason.BAD_SIGNATURE


def test_cluster_authorization_is_judged_by_the_cluster_secret() -> None:
    edge = stream_token(secret=CLUSTER_SECRET)
    assert play(cluster_authorization=edge).reason is Reason.OK
    # Judged instead of the viewer's token: a stream-secret token there is refused.
    assert play(cluster_authorization=stream_token()).reason is Reason.BAD_SIGNATURE
    assert play(cluster_authorization=stream_token("x", secret=CLUSTER_SECRET)).reason is (
        Reason.STREAM_MISMATCH
    )
    with_query = play(f"{PATH}?token=whatever", cluster_authorization=edge)
    assert with_query.reason is Reason.OK and with_query.query_parameters_to_remove == ("token",)


def test_cluster_authorization_without_the_setting_is_never_trusted() -> None:
    no_cluster = StreamKeys(STREAMS.play)
    edge = stream_token(secret=CLUSTER_SECRET)
    assert play(cluster_authorization=edge, streams=no_cluster).reason is Reason.MISSING_TOKEN
    decision = play(f"{PATH}?token={stream_token()}", cluster_authorization=edge,
                    streams=no_cluster)
    assert decision.reason is Reason.OK


def test_an_unknown_stream_kind_on_a_route_is_refused() -> None:
    view = RequestView(None, None, path=PATH, method="GET", context={"stream": "publish"})
    assert decide(view, REST_KEYS, SETTINGS, NOW, streams=STREAMS).reason is (
        Reason.UNKNOWN_POLICY
    )


# ---- the webhook question ----


def test_webhook_rules() -> None:
    assert webhook("publish", "s1", stream_token("s1", "publish")).reason is Reason.OK
    assert webhook("play", "s1", stream_token("s1", "play")).reason is Reason.OK
    assert webhook("publish", "s1", stream_token("s1", "play")).reason is Reason.STREAM_MISMATCH
    assert webhook("play", "s1", stream_token("s2", "play")).reason is Reason.STREAM_MISMATCH
    assert webhook("play", "s1", None).reason is Reason.MISSING_TOKEN
    assert webhook("play", None, stream_token()).reason is Reason.NO_STREAM_ID
    assert webhook("play", "s1", None, readable=False).reason is Reason.MALFORMED
    off = Settings(hs256_secret=REST_SECRET, stream_secret=STREAM_SECRET, play_jwt_enabled=True)
    ask = WebhookAsk("publish", None, None, readable=False)
    view = RequestView(None, None, webhook=ask)
    assert decide(view, REST_KEYS, off, NOW, streams=STREAMS).reason is Reason.JWT_DISABLED


# ---- token sources (policies) ----


def _policy_settings(*sources: str) -> Settings:
    parsed = tuple(TokenSource(*s.split(":", 1)) for s in sources)  # type: ignore[arg-type]
    return Settings(
        hs256_secret=REST_SECRET, policies={"p": Policy("p", token_sources=parsed)}
    )


def _rest(settings: Settings, path: str = "/a/rest/x", **kw: Any) -> Decision:
    view = RequestView(kw.pop("authorization", None), None, path=path, context={"policy": "p"},
                       **kw)
    return decide(view, REST_KEYS, settings, NOW)


def test_query_and_cookie_sources() -> None:
    settings = _policy_settings("query:access_token", "cookie:jwt")
    token = rest_token()
    in_query = _rest(settings, f"/a/rest/x?access_token={token}")
    assert in_query.reason is Reason.OK
    assert in_query.query_parameters_to_remove == ("access_token",)
    in_cookie = _rest(settings, cookie=f"a=b; jwt={token}; c=d")
    assert in_cookie.reason is Reason.OK and in_cookie.query_parameters_to_remove == ()
    assert _rest(settings, f"/a/rest/x?access_token={token}", cookie=f"jwt={token}").reason is (
        Reason.MALFORMED
    )
    assert _rest(settings, cookie=f"jwt={token}; jwt={token}").reason is Reason.MALFORMED
    assert _rest(settings).reason is Reason.MISSING_TOKEN
    # The header is not a source of this policy.
    assert _rest(settings, authorization=token).reason is Reason.MISSING_TOKEN


def test_form_decoding_is_once() -> None:
    assert form_decode("a+b%20c") == "a b c"
    assert form_decode("%2541") == "%41"
    assert form_decode("%zz%4") == "%zz%4"
    assert query_value("x=1&token=a%2Bb+c&y", "token") == "a+b c"
    assert query_value("x=1", "token") is None
    assert query_value("x=%74oken&token=", "token") == ""  # a value is decoded, not a name


# Envoy removes `token`, never `%74oken`, which Tomcat reads as `token` (SPEC section 8
# item 4): a token parameter is read only as spelled, an encoded spelling is malformed.
@pytest.mark.parametrize(
    "query",
    ["%74oken=abc", "x=1&%74%6Fken=abc", "%74%6fken=abc&y", "tok%65n", "%74oken=abc&token=abc"],
)
def test_an_encoded_token_name_is_malformed(query: str) -> None:
    with pytest.raises(TokenError) as refused:
        query_value(query, "token")
    assert refused.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "query", ["TOKEN=abc", "Token=abc", "token%20=abc", "to+ken=abc", "tokens=a"]
)
def test_another_name_is_not_the_token(query: str) -> None:
    assert query_value(query, "token") is None


def test_play_token_in_an_encoded_parameter_name_is_refused() -> None:
    token = stream_token()
    assert play(f"{PATH}?%74oken={token}").reason is Reason.MALFORMED
    assert play(f"{PATH}?a=1&%74%6Fken={token}").reason is Reason.MALFORMED
    assert play(f"{PATH}?TOKEN={token}").reason is Reason.MISSING_TOKEN
    assert play(f"{PATH}?%74oken={token}", authorization=token).reason is Reason.MALFORMED
    kept = play(f"{PATH}?a=1&token={token}&b=%74oken")
    assert kept.reason is Reason.OK and kept.query_parameters_to_remove == ("token",)


def test_an_encoded_query_source_name_is_refused_on_rest_routes() -> None:
    settings = _policy_settings("query:access_token")
    token = rest_token()
    assert _rest(settings, f"/a/rest/x?access%5Ftoken={token}").reason is Reason.MALFORMED
    assert _rest(settings, f"/a/rest/x?access_token={token}").reason is Reason.OK


@pytest.mark.parametrize("name", ["access_token", "jwt.v1-x", "T0KEN"])
def test_query_source_names_of_plain_characters(name: str) -> None:
    assert parse_token_source(f"query:{name}") == TokenSource("query", name)


@pytest.mark.parametrize("name", ["a+b", "a~b", "a%20b", "a b", "tök", "a&b", "a=b", "a#", "a?"])
def test_query_source_names_that_clients_would_encode_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        parse_token_source(f"query:{name}")
    assert cookie_value('jwt="abc"', "jwt") == "abc"
    assert cookie_value("jwt2=abc", "jwt") is None


# ---- settings ----


def test_properties_map_the_stream_settings(tmp_path: Path) -> None:
    properties = tmp_path / "red5-web.properties"
    properties.write_text(
        f"settings.jwtSecretKey={REST_SECRET}\n"
        f"settings.jwtStreamSecretKey={STREAM_SECRET}\n"
        "settings.playJwtControlEnabled=true\n"
        "settings.publishJwtControlEnabled=true\n"
        f"settings.clusterCommunicationKey={CLUSTER_SECRET}\n"
    )
    settings = load_settings(None, str(properties), {})
    assert settings.stream_secret == STREAM_SECRET and settings.cluster_secret == CLUSTER_SECRET
    assert settings.play_jwt_enabled and settings.publish_jwt_enabled
    # The environment wins: authz keeps enforcing once Ant Media's own check is off.
    env = {"AUTHZ_PLAY_JWT_ENABLED": "false"}
    assert load_settings(None, str(properties), env).play_jwt_enabled is False


@pytest.mark.parametrize("switch", ["AUTHZ_PLAY_JWT_ENABLED", "AUTHZ_PUBLISH_JWT_ENABLED"])
def test_a_switch_without_a_stream_secret_stops_the_start(switch: str) -> None:
    with pytest.raises(SettingsError, match=switch):
        load_settings(None, None, {"AUTHZ_HS256_SECRET": REST_SECRET, switch: "true"})


def test_stream_secret_rules(tmp_path: Path) -> None:
    env = {"AUTHZ_HS256_SECRET": REST_SECRET}
    with pytest.raises(SettingsError, match="AUTHZ_STREAM_SECRET: must be at least 32") as bad:
        load_settings(None, None, {**env, "AUTHZ_STREAM_SECRET": "short"})
    assert "short" not in str(bad.value)
    missing = str(tmp_path / "nope")
    with pytest.raises(SettingsError, match="AUTHZ_STREAM_SECRET_FILE"):
        load_settings(None, None, {**env, "AUTHZ_STREAM_SECRET_FILE": missing})
    secret_file = tmp_path / "stream"
    secret_file.write_text(STREAM_SECRET + "\n")
    settings = load_settings(None, None, {
        **env, "AUTHZ_STREAM_SECRET_FILE": str(secret_file), "AUTHZ_PLAY_JWT_ENABLED": "1",
    })
    assert settings.stream_secrets == (STREAM_SECRET.encode(),)
    assert KeyStore.of_stream_secrets(settings).snapshot.hmac_keys.keys() == {"HS256"}


def test_webhook_address_clashes_are_refused() -> None:
    with pytest.raises(SettingsError, match="AUTHZ_AMS_WEBHOOK_ADDRESS"):
        load_settings(None, None, {
            "AUTHZ_HS256_SECRET": REST_SECRET, "AUTHZ_AMS_WEBHOOK_ADDRESS": "0.0.0.0:9001",
        })


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("[query:token, query:token]", "listed twice"),
        ("[header:x-token]", "only header source"),
        ('["query:"]', "not header:authorization"),
        ("[cookie:a b]", "RFC 6265"),
        ("[query:a+b]", "letters, digits"),
        ("[]", "non-empty list"),
        ("[path:x]", "header, query or cookie"),
    ],
)
def test_bad_token_sources_stop_the_start(tmp_path: Path, sources: str, message: str) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(
        f"hs256_secret: {REST_SECRET}\npolicies:\n  p:\n    token_sources: {sources}\n"
    )
    with pytest.raises(SettingsError, match=f"policies.p.token_sources: .*{message}"):
        load_settings(str(config), None, {})


# ---- both doors decide alike ----


def _grpc_view(path: str, method: str, headers: dict[str, str],
               context: dict[str, str]) -> RequestView:
    request = CheckRequest()
    http = request.attributes.request.http
    http.path, http.method = path, method
    http.headers.update(headers)
    request.attributes.context_extensions.update(context)
    request.attributes.source.address.socket_address.address = "203.0.113.9"
    return grpc_front.request_view(CheckRequest.FromString(request.SerializeToString()))


def _http_view(path: str, method: str, headers: dict[str, str],
               context: dict[str, str]) -> RequestView:
    route, _, query = path.partition("?")
    sent = [(k, v) for k, v in headers.items()]
    sent += [("x-authz-client-ip", "203.0.113.9")]
    sent += [(f"x-authz-{k}", v) for k, v in context.items()]
    return http_front.request_view(method, route, query, sent)


CASES = [
    (f"{PATH}?token={stream_token()}", "GET", {}),
    (f"{PATH}?token={stream_token()}", "POST", {}),
    (PATH, "OPTIONS", {}),
    (PATH, "GET", {"authorization": f"Bearer {stream_token()}"}),
    (f"{PATH}?token={stream_token()}", "GET", {"authorization": stream_token()}),
    (f"{PATH}?token={stream_token('other')}", "GET", {}),
    ("/LiveApp/streams/x", "GET", {}),
    (PATH, "GET", {"clusterauthorization": stream_token(secret=CLUSTER_SECRET)}),
    (f"{PATH}?a=1&token={stream_token()}", "HEAD", {"x-jwt-stream-id": "spoofed"}),
]


@pytest.mark.parametrize(("path", "method", "headers"), CASES)
def test_grpc_and_http_doors_decide_stream_routes_alike(
    path: str, method: str, headers: dict[str, str]
) -> None:
    checker = Checker(
        Settings(hs256_secret=REST_SECRET, stream_secret=STREAM_SECRET, play_jwt_enabled=True,
                 cluster_secret=CLUSTER_SECRET),
        KeyStore(SETTINGS),
        clock=lambda: NOW,
    )
    by_grpc = checker.decide_now(_grpc_view(path, method, headers, PLAY))
    by_http = checker.decide_now(_http_view(path, method, headers, PLAY))
    assert by_grpc == by_http


def test_the_grpc_door_removes_the_query_token() -> None:
    decision = play(f"{PATH}?token={stream_token()}")
    response = CheckResponse.FromString(grpc_front.encode_response(decision))
    assert list(response.ok_response.query_parameters_to_remove) == ["token"]
    assert [(h.header.key, h.header.value) for h in response.ok_response.headers] == [
        ("x-jwt-stream-id", "stream1")
    ]


def test_no_token_or_secret_in_logs_or_answers(caplog: pytest.LogCaptureFixture) -> None:
    checker = Checker(SETTINGS, KeyStore(SETTINGS), clock=lambda: NOW)
    tokens = [stream_token(), stream_token("other"), stream_token(exp=NOW - 9999)]
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            decision = checker.decide_now(
                RequestView(None, "1.2.3.4", path=f"{PATH}?token={token}", method="GET",
                            context=PLAY)
            )
            answer = http_front.answer(decision)
            rendered = repr(grpc_front.check_response(decision)) + repr(answer)
            assert token not in rendered and token.split(".")[2] not in rendered
    text = caplog.text
    for secret in (STREAM_SECRET, REST_SECRET, *tokens):
        assert secret not in text
