"""A real HLS player through the real Envoy in front of a real Tomcat (SPEC section 9).

ffmpeg made a 4 s stream named as Ant Media names stream `testsrc1`'s files (tests/hls.py);
each case publishes it into its own folder under LiveApp/streams/ with the case's token
added to every segment URI, as Ant Media's manifest rewriting adds it, and ffmpeg plays
`{folder}/testsrc1.m3u8?token=...` through envoy.yaml (gRPC door) and envoy-http.yaml
(HTTP door) with authz enforcing play tokens. The stream plays with a valid play token and
not with none, another stream's, a publish token or an expired one; a playlist whose
segments lost the token plays nothing either. Through the gRPC door Tomcat's access log
shows that no request reaching it carried the token.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.core.mint import mint_hmac
from tests.harness import ENVOY_HTTP_YAML, ENVOY_YAML, free_port, run_authz, run_envoy
from tests.hls import HlsStream, play, publish, segments_read
from tests.tomcat import Tomcat

pytestmark = pytest.mark.e2e

STREAM_SECRET = "stream-secret-for-the-hls-player-tests!!"
# Config -> whether its door removes `token` from the URL the upstream gets.
CONFIGS = {"envoy.yaml": True, "envoy-http.yaml": False}


def play_token(stream_id: str, kind: str = "play", ttl: float = 3600) -> str:
    claims = {"streamId": stream_id, "type": kind, "exp": int(time.time() + ttl)}
    return mint_hmac(claims, STREAM_SECRET.encode())


@dataclass(frozen=True)
class Gateway:
    ports: dict[str, int]
    tomcat: Tomcat

    def url(self, config: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[config]}{path}"


@pytest.fixture(scope="module")
def gateway(tomcat: Tomcat) -> Iterator[Gateway]:
    env = {
        "AUTHZ_PLAY_JWT_ENABLED": "true",
        "AUTHZ_STREAM_SECRET": STREAM_SECRET,
        "AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    with contextlib.ExitStack() as stack:
        authz = stack.enter_context(run_authz(env))
        grpc = stack.enter_context(
            run_envoy({"authz": authz.grpc_port, "ant_media": tomcat.port}, source=ENVOY_YAML)
        )
        http = stack.enter_context(
            run_envoy(
                {"authz": authz.http_authz_port, "ant_media": tomcat.port},
                source=ENVOY_HTTP_YAML,
                health_check_ports={"authz": authz.http_port},
            )
        )
        streams = tomcat.streams_dir()
        streams.mkdir(exist_ok=True)
        before = set(streams.iterdir())
        try:
            yield Gateway({"envoy.yaml": grpc.port, "envoy-http.yaml": http.port}, tomcat)
        finally:
            # The session's Tomcat keeps serving other tests: leave its streams/ as found.
            for path in set(streams.iterdir()) - before:
                shutil.rmtree(path)


_cases = iter(range(1_000_000))


def _published(gateway: Gateway, stream: HlsStream, token: str | None) -> str:
    """Publish `stream` into a folder of its own (segment URIs carrying `token`); its
    playlist's path on the server."""
    folder = f"hls{next(_cases)}"
    publish(stream, gateway.tomcat.streams_dir() / folder, token)
    return f"/LiveApp/streams/{folder}/{stream.playlist.name}"


@pytest.mark.parametrize("config", CONFIGS)
def test_the_stream_plays_with_a_valid_play_token_and_the_upstream_never_sees_it(
    gateway: Gateway, hls_stream: HlsStream, config: str
) -> None:
    token = play_token(hls_stream.stream_id)
    playlist = _published(gateway, hls_stream, token)
    before = len(gateway.tomcat.requests())
    played = play(gateway.url(config, f"{playlist}?token={token}"))
    assert played.returncode == 0, played.stderr[-2000:]
    read = [Path(url.partition("?")[0]).name for url in segments_read(played)]
    assert read == [segment.name for segment in hls_stream.segments]
    served = [line for line in gateway.tomcat.requests()[before:] if playlist.rpartition("/")[0]
              in line]
    # The playlist and every segment reached Tomcat...
    assert len(served) == 1 + len(hls_stream.segments), served
    # ...and through the gRPC door without the token (the HTTP door cannot remove it).
    assert any(token in line for line in served) is not CONFIGS[config], served


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", ["none", "other stream", "publish", "expired"])
def test_the_stream_does_not_play_without_a_valid_play_token(
    gateway: Gateway, hls_stream: HlsStream, config: str, case: str
) -> None:
    stream_id = hls_stream.stream_id
    token = {
        "none": None,
        "other stream": play_token("someoneelse"),
        "publish": play_token(stream_id, kind="publish"),
        "expired": play_token(stream_id, ttl=-120),
    }[case]
    playlist = _published(gateway, hls_stream, token)
    before = len(gateway.tomcat.requests())
    target = playlist if token is None else f"{playlist}?token={token}"
    played = play(gateway.url(config, target))
    assert played.returncode != 0
    assert segments_read(played) == []
    # Refused at the gateway: nothing of this folder reached Tomcat.
    folder = playlist.rpartition("/")[0]
    assert [line for line in gateway.tomcat.requests()[before:] if folder in line] == []


@pytest.mark.parametrize("config", CONFIGS)
def test_segments_that_lost_the_token_do_not_play(
    gateway: Gateway, hls_stream: HlsStream, config: str
) -> None:
    # The playlist request carries a valid token; its segment URIs do not (the users'
    # most frequent complaint): the playlist loads, every segment is refused.
    token = play_token(hls_stream.stream_id)
    playlist = _published(gateway, hls_stream, None)
    played = play(gateway.url(config, f"{playlist}?token={token}"))
    assert played.returncode != 0
    assert segments_read(played) == []
