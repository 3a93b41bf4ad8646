"""The HLS fixture (tests/hls.py) is real: ffmpeg writes the files Ant Media would write for
the stream, Tomcat serves them from LiveApp/streams/ as Ant Media serves its stream files,
and the player reads them all, or fails when a segment is missing.

No Envoy here: the later end-to-end tests put one between the player and Tomcat.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.core.stream import stream_id_of
from tests.hls import HlsStream, play, publish, segment_name, segment_uris, segments_read
from tests.hls import with_token as tokenized
from tests.tomcat import Tomcat, served

pytestmark = pytest.mark.e2e

SEGMENTS = 4  # 4 s in 1 s segments
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdHJlYW1JZCI6InRlc3RzcmMxIn0.c2lnbmF0dXJl"


@pytest.fixture
def streams(tomcat: Tomcat) -> Iterator[Path]:
    """Tomcat's LiveApp/streams/ folder; what a test publishes there is gone afterwards, so
    the shared Tomcat's other tests see only their echo servlet there."""
    root = tomcat.streams_dir()
    root.mkdir(exist_ok=True)
    before = set(root.iterdir())
    yield root
    for path in set(root.iterdir()) - before:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def url(tomcat: Tomcat, path: str) -> str:
    return f"http://127.0.0.1:{tomcat.port}{path}"


def test_ffmpeg_wrote_the_files_ant_media_writes(hls_stream: HlsStream) -> None:
    stream_id = hls_stream.stream_id
    expected = [segment_name(stream_id, i) for i in range(SEGMENTS)]
    assert expected[0] == f"{stream_id}000000000.ts"
    assert hls_stream.names == (f"{stream_id}.m3u8", *expected)
    assert sorted(p.name for p in hls_stream.directory.iterdir()) == sorted(hls_stream.names)
    text = hls_stream.playlist.read_text()
    assert segment_uris(text) == expected
    assert "#EXT-X-TARGETDURATION:1\n" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    durations = [float(d) for d in re.findall(r"^#EXTINF:([0-9.]+),", text, re.MULTILINE)]
    assert len(durations) == SEGMENTS
    assert sum(durations) == pytest.approx(SEGMENTS, abs=0.1)
    for segment in hls_stream.segments:
        assert segment.read_bytes()[:1] == b"G"  # an MPEG-TS sync byte
    # The names say whose they are, as Ant Media reads them (authz/core/stream.py).
    for name in hls_stream.names:
        assert stream_id_of(f"/LiveApp/streams/{name}") == stream_id, name
        assert stream_id_of(f"/LiveApp/streams/sub/{name}") == stream_id, name


def test_with_token_marks_every_segment_uri_as_ant_media_does() -> None:
    playlist = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.000000,\ns000000000.ts\n"
        "#EXTINF:1.000000,\ns000000001.ts?start=1\n#EXTINF:1.000000,\nsub/s000000002.m4s\n"
        "#EXT-X-ENDLIST\n"
    )
    assert tokenized(playlist, "abc") == (
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.000000,\ns000000000.ts?token=abc\n"
        "#EXTINF:1.000000,\ns000000001.ts?start=1&token=abc\n#EXTINF:1.000000,\n"
        "sub/s000000002.m4s?token=abc\n#EXT-X-ENDLIST\n"
    )
    # A playlist of playlists (an adaptive one) keeps its URIs: Ant Media rewrites those
    # with a rule of its own.
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\ns_240p300kbps.m3u8\n"
    assert tokenized(master, "abc") == master


def test_tomcat_serves_the_stream_files(
    tomcat: Tomcat, hls_stream: HlsStream, streams: Path
) -> None:
    publish(hls_stream, streams)
    types = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}
    for path in (hls_stream.playlist, *hls_stream.segments):
        answer = tomcat.get(f"/LiveApp/streams/{path.name}")
        assert answer.status == 200, (path.name, answer.status, answer.body[:200])
        assert answer.header("content-type") == types[path.suffix], path.name
        assert answer.body == path.read_bytes(), path.name
    # A query string (the token) changes nothing for a static file.
    answer = tomcat.get(f"/LiveApp/streams/{hls_stream.segments[0].name}?token={TOKEN}")
    assert (answer.status, answer.body) == (200, hls_stream.segments[0].read_bytes())
    # A stream file that is not there still reaches the echo servlet (the gateway tests').
    echo = tomcat.get(f"/LiveApp/streams/{segment_name(hls_stream.stream_id, SEGMENTS)}")
    assert echo.status == 200
    assert served(echo.body).servlet == "streams"


def test_play_reads_every_segment(tomcat: Tomcat, hls_stream: HlsStream, streams: Path) -> None:
    publish(hls_stream, streams)
    played = play(url(tomcat, f"/LiveApp/streams/{hls_stream.playlist.name}"))
    assert played.returncode == 0, played.stderr[-3000:]
    expected = [url(tomcat, f"/LiveApp/streams/{s.name}") for s in hls_stream.segments]
    assert segments_read(played) == expected


def test_play_reads_a_tokenized_playlist(
    tomcat: Tomcat, hls_stream: HlsStream, streams: Path
) -> None:
    # As Ant Media answers `{id}.m3u8?token=...`: every segment URI carries the token.
    publish(hls_stream, streams / "tokenized", token=TOKEN)
    name = hls_stream.playlist.name
    played = play(url(tomcat, f"/LiveApp/streams/tokenized/{name}?token={TOKEN}"))
    assert played.returncode == 0, played.stderr[-3000:]
    expected = [
        url(tomcat, f"/LiveApp/streams/tokenized/{s.name}?token={TOKEN}")
        for s in hls_stream.segments
    ]
    assert segments_read(played) == expected


def test_play_fails_when_segments_are_missing(
    tomcat: Tomcat, hls_stream: HlsStream, streams: Path
) -> None:
    # Outside streams/ Tomcat's DefaultServlet answers 404 for a file that is not there
    # (inside, the echo servlet would answer it).
    vod = tomcat.streams_dir().parent / "missing"
    try:
        names = [s.name for s in hls_stream.segments]
        publish(hls_stream, vod / "one", without=[names[2]])
        assert tomcat.get(f"/LiveApp/missing/one/{names[2]}").status == 404
        one = play(url(tomcat, f"/LiveApp/missing/one/{hls_stream.playlist.name}"))
        assert one.returncode == 1, one.stderr[-3000:]
        expected = [url(tomcat, f"/LiveApp/missing/one/{n}") for n in names if n != names[2]]
        assert segments_read(one) == expected

        publish(hls_stream, vod / "all", without=names)
        every = play(url(tomcat, f"/LiveApp/missing/all/{hls_stream.playlist.name}"))
        assert every.returncode != 0, every.stderr[-3000:]
        assert segments_read(every) == []

        nothing = play(url(tomcat, "/LiveApp/missing/none.m3u8"))
        assert nothing.returncode != 0, nothing.stderr[-3000:]
    finally:
        shutil.rmtree(vod, ignore_errors=True)
