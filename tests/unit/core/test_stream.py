"""Stream ids from media paths (authz/core/stream.py), as Ant Media Server derives them.

Read from ant-media/Ant-Media-Server at commit 5130ad8893a2a36d36f167045cf3db41cdf0057c
(2026-06-24): src/main/java/io/antmedia/filter/TokenFilterManager.java (`getStreamId`, last
changed in 5ca989f0cae3), src/main/java/io/antmedia/muxer/Muxer.java (`getExtendedName`,
`SEGMENT_INDEX_LENGTH`), src/main/java/io/antmedia/muxer/HLSMuxer.java (segment names),
src/main/java/io/antmedia/StreamIdValidator.java, and the cases of
src/test/java/io/antmedia/test/token/TokenFilterTest.java (`testGetStreamId`) and
src/test/java/io/antmedia/test/security/TokenFilterTest.java (DRM). Rows marked "AMS test"
restate one of those cases in our own words; the rest follow from the code.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.core.stream import stream_id_of

# Stream ids as Ant Media allows them: letters, digits, `_`, `-`, `.`.
IDS = ("stream1", "stream_Id", "test_test_stream_Id", "f6867e64-c9a1-a7dd-1d14-6b4312c8c8ee")
# The same file names anywhere below streams/: Ant Media serves a broadcast's subFolder there.
FOLDERS = ("", "sub/", "sub/deeper/", "ll-hls/")

# File name (`{id}` replaced) -> what the id is, for every id above and in every folder.
FILE_NAMES = (
    "{id}.m3u8",  # the playlist
    "{id}_adaptive.m3u8",  # the adaptive master playlist
    "{id}_240p.m3u8",  # a rendition's playlist: resolution
    "{id}_500kbps.m3u8",  # bitrate
    "{id}_240p300kbps.m3u8",  # both
    "{id}000000012.ts",  # a segment, HLSMuxer's `%09d` index
    "{id}0000.ts",  # the 4-digit index of older versions (AMS test)
    "{id}_240p300kbps000000012.ts",  # a rendition's segment
    "{id}_240p300kbps0000.ts",  # with the old index (AMS test)
    "{id}_240p000000012.ts",
    "{id}_500kbps000000012.ts",
    "{id}_0p500kbps0000.ts",  # AMS test: a zero height
    "{id}000000012.fmp4",  # HLS with fMP4 segments
    "{id}_240p300kbps000000012.fmp4",
    "{id}__lowlatency.m3u8",  # LL-HLS (AMS test)
    "{id}__master.m3u8",  # AMS test
    "{id}__anything.ts",  # AMS test
    "{id}.mp4",  # a recording
    "{id}_1.mp4",  # the second recording of one stream
    "{id}_480p300kbps_1.mp4",  # AMS test
    "{id}_240p500kbps.mp4",  # AMS test
    "{id}_240p.mp4",
    "{id}.mp3",  # AMS test: audio-only VoD
    "{id}.webm",  # AMS test
    "{id}_1.webm",  # AMS test
    "{id}_240p500kbps.webm",  # AMS test
    "{id}_240p500kbps_2.webm",  # AMS test
    "{id}-2021-05-18_11-26-26.842.mp4",  # a recording named with its start time (AMS test)
    "{id}-2021-05-18_11-26-26.842_240p500kbps.mp4",  # AMS test
    "{id}-2021-05-18_11-26-26.842_240p500kbps_3.mp4",
    "{id}-2021-12-26_19-13-12.371.webm",  # AMS test
    "{id}-2021-12-26_19-13-39.524_240p500kbps.webm",  # AMS test
)


@pytest.mark.parametrize("name", FILE_NAMES)
def test_file_names_name_their_stream(name: str) -> None:
    for stream_id in IDS:
        for folder in FOLDERS:
            for app in ("LiveApp", "live_app"):  # AMS test: an `_` in the app name is no matter
                path = f"/{app}/streams/{folder}{name.format(id=stream_id)}"
                assert stream_id_of(path) == stream_id, path


# path -> stream id, for the forms a folder names and for ids that only look like forms.
DERIVED = {
    # DASH: the stream's folder below streams/ (AMS test, both index lengths).
    "/LiveApp/streams/stream1/stream1_0segment00139.m4s": "stream1",
    "/LiveApp/streams/test_test_x/test_test_x_1segment00139.m4s": "test_test_x",
    "/LiveApp/streams/stream1/stream1_0segment00139000001.m4s": "stream1",
    "/LiveApp/streams/stream1/stream1.mpd": "stream1",
    # LL-HLS by chunked transfer: the folder below chunked/ (AMS test).
    "/LiveApp/chunked/stream1/media_1.m3u8": "stream1",
    "/LiveApp/chunked/stream1/media_0.m3u8": "stream1",
    "/LiveApp/chunked/test_test_x/master.m3u8": "test_test_x",
    "/live_app/chunked/stream1/media_1.m3u8": "stream1",
    # DRM: the folder below streams/drm/ (AMS security test), whatever the file is called.
    "/LiveApp/streams/drm/stream1/master.mpd": "stream1",
    "/LiveApp/streams/drm/stream1/master.m3u8": "stream1",
    "/LiveApp/streams/drm/stream1/video/seg_00001.m4s": "stream1",
    # LL-HLS files in the stream's folder carry the id in their name (AMS test).
    "/LiveApp/streams/ll-hls/AgTWuHxp/AgTWuHxp__lowlatency.m3u8": "AgTWuHxp",
    "/LiveApp/streams/sub/ll-hls/AgTWuHxp/AgTWuHxp__anything.ts": "AgTWuHxp",
    # An id that ends in `_` and its rendition: `id_` + `_720p2000kbps` (AMS test).
    "/LiveApp/streams/event_x__720p2000kbps.m3u8": "event_x_",
    "/LiveApp/streams/event_x__720p2000kbps000000266.ts": "event_x_",
    "/LiveApp/streams/event_x__720p2000kbps.mp4": "event_x_",
    # Underscores that are no rendition stay in the id (AMS test).
    "/LiveApp/streams/stream_Id_underline_test.m3u8": "stream_Id_underline_test",
    "/LiveApp/streams/stream_Id_underline_test_240p.m3u8": "stream_Id_underline_test",
    "/LiveApp/streams/stream_Id_underline_test_480p300kbps.m3u8": "stream_Id_underline_test",
    "/LiveApp/streams/a_b_c_adaptive.m3u8": "a_b_c",
    "/LiveApp/streams/show_live_adaptive_42_480p600kbps_1.mp4": "show_live_adaptive_42",
    "/LiveApp/streams/show_live_adaptive_7.webm": "show_live_adaptive",
    "/LiveApp/streams/stream_Id_u-2021-05-18_11-26-26.842.mp4": "stream_Id_u",
    # Nine index digits are taken first: an id may end in digits (AMS test: "monstercat").
    "/LiveApp/streams/concert060218000.ts": "concert",
    "/LiveApp/streams/cam7000000001.ts": "cam7",
    "/LiveApp/streams/cam70001.ts": "cam7",
    "/LiveApp/streams/a.b.m3u8": "a.b",
    # Ant Media's custom segment suffixes (settings.hlsSegmentFileSuffixFormat, AMS test with
    # `-%s`) are not known: such a name reads as the default `%09d` index, as Ant Media reads
    # it by default.
    "/LiveApp/streams/cam-1741579422.ts": "cam-1",
}


@pytest.mark.parametrize(("path", "expected"), DERIVED.items())
def test_derived(path: str, expected: str) -> None:
    assert stream_id_of(path) == expected


NO_STREAM_ID = (
    # Nothing to read.
    "",
    "/",
    "/LiveApp/streams",
    "/LiveApp/streams/",
    "/LiveApp/chunked/",
    "/LiveApp/streams/stream1",  # no extension
    "/LiveApp/streams/stream1.u8",  # AMS test
    "/LiveApp/streams/sub/stream1.u8",  # AMS test
    "/LiveApp/streams/stream1.txt",
    "/LiveApp/streams/stream1.m3u8.txt",
    "/LiveApp/streams/previews/stream1.png",
    "/LiveApp/streams/stream1.ts",  # a segment without an index
    "/LiveApp/streams/stream1_anything.ts",  # AMS test
    "/LiveApp/streams/ll-hls/AgTWuHxp/AgTWuHxp_anything.ts",  # AMS test
    # Not a stream route: the id is read below /{app}/streams/ and /{app}/chunked/ only.
    "/LiveApp/rest/v2/broadcasts/stream1.m3u8",
    "/LiveApp/stream1.m3u8",
    "/streams/stream1.m3u8",
    "LiveApp/streams/stream1.m3u8",
    "/LiveApp/Streams/stream1.m3u8",
    "/LiveApp/x/streams/stream1.m3u8",
    # An empty id.
    "/LiveApp/streams/.m3u8",
    "/LiveApp/streams/_adaptive.m3u8",
    "/LiveApp/streams/_240p.m3u8",
    "/LiveApp/streams/0000.ts",
    "/LiveApp/streams/000000012.ts",
    "/LiveApp/streams/__lowlatency.m3u8",
    "/LiveApp/streams/.mp4",
    "/LiveApp/streams/drm//master.m3u8",
    # Dot segments and empty segments: the servlet container would serve another file.
    "/LiveApp/streams/../stream1.m3u8",
    "/LiveApp/streams/./stream1.m3u8",
    "/LiveApp/streams/sub/../stream1.m3u8",
    "/LiveApp/streams/stream1/..",
    "/LiveApp/streams//stream1.m3u8",
    "/LiveApp/streams/stream1.m3u8/",
    "/LiveApp/chunked/../streams/stream1.m3u8",
    "/LiveApp/streams/..m3u8",  # id ".": a dot segment by another name
    "/LiveApp/streams/...m3u8",
    # Odd bytes: percent-encoding, path parameters, backslashes, query strings, non-ASCII.
    "/LiveApp/streams/%2e%2e/stream1.m3u8",
    "/LiveApp/streams/stream%31.m3u8",
    "/LiveApp/streams/stream1.m3u8;jsessionid=1",
    "/LiveApp/streams/sub;x=1/stream1.m3u8",
    "/LiveApp;x/streams/stream1.m3u8",
    "/LiveApp/streams/a\\b.m3u8",
    "/LiveApp/streams/a b.m3u8",
    "/LiveApp/streams/a|b.m3u8",  # Ant Media turns `|` into `_`
    "/LiveApp/streams/a\tb.m3u8",
    "/LiveApp/streams/stream1.m3u8?token=x",
    "/LiveApp/streams/str\u00e9am.m3u8",
    "/live)app/streams/sub/stream_Id_240p500kbps.webm",  # AMS test derives stream_Id
    # Ant Media reads `__` as the end of the id: one only.
    "/LiveApp/streams/a__b__c.m3u8",
    "/LiveApp/streams/a___720p2000kbps.m3u8",
    "/LiveApp/streams/a__b_adaptive.m3u8",
    "/LiveApp/chunked/a__b/media_1.m3u8",
    "/LiveApp/streams/sub__x/stream1.m3u8",
    # Ambiguous: the 240p rendition or 2nd recording of `a_`, which Ant Media reads as `a`.
    "/LiveApp/streams/a__240p.m3u8",
    "/LiveApp/streams/a__240p000000001.ts",
    "/LiveApp/streams/a__1.mp4",
    "/LiveApp/streams/a__x500kbps.m3u8",
    # Where Ant Media's id is not the stream's: fMP4 init segments ("{id}_{ms}_init.mp4"
    # reads as "{id}_{ms}"), an `_{digit}` folder ("sub_1/a_b.mp4" reads as "a"), a
    # recording with both a rendition-only suffix and a copy number ("a_240p_1.mp4" reads as
    # "a_240p"), an id that is itself a rendition, a marker Ant Media finds in a folder.
    "/LiveApp/streams/stream1_1700000000000_init.mp4",
    "/LiveApp/streams/sub_1/a_b.mp4",
    "/LiveApp/streams/sub_1/stream1.mp4",
    "/LiveApp/streams/a_240p_1.mp4",
    "/LiveApp/streams/a_500kbps_1.mp4",
    "/LiveApp/streams/a_240p300kbps_480p300kbps.mp4",
    "/LiveApp/streams/x_240p300kbps/stream1.mp4",
    "/LiveApp/streams/ev-2021-05/stream1.mp4",
    "/LiveApp/streams/cam-2024-01.mp4",
    "/LiveApp/streams/stream1-2021-05-18_11-26-26.842_1.mp4",
    "/LiveApp/streams/stream1-2021-05-18_11-26-26.842_240p.mp4",
    "/LiveApp/streams/x.mp4/stream1.webm",
    "/LiveApp/streams/a.mp4.webm",
    "/LiveApp/streams/x.m3u8/stream1.ts",
    "/LiveApp/streams/x.m3u8/stream10000.ts",
    # Ant Media splits the path on `streams` and `chunked` and tests for `m4s`, `mpd` and
    # `chunked` anywhere: such a word elsewhere takes another rule.
    "/LiveApp/streams/mystreams.m3u8",
    "/streamsApp/streams/stream1.m3u8",
    "/LiveApp/streams/streams/stream1.m3u8",
    "/LiveApp/streams/chunked1.m3u8",
    "/LiveApp/streams/mpdtest.m3u8",
    "/LiveApp/streams/m4s1000000001.ts",
    "/LiveApp/chunked/streams1/media_1.m3u8",
    "/chunkedApp/chunked/stream1/media_1.m3u8",
    "/m4sApp/chunked/stream1/media_1.m3u8",
    "/LiveApp/chunked/stream1/chunk_1.m4s",
    "/LiveApp/chunked/stream1/manifest.mpd",
    # DASH and DRM folders: only directly below streams/ (Ant Media keeps the subfolder in
    # the id), with a file inside; a `drm` folder deeper down is not one.
    "/LiveApp/streams/stream1.mpd",
    "/LiveApp/streams/stream1_0segment00139.m4s",
    "/LiveApp/streams/sub/stream1/stream1.mpd",
    "/LiveApp/streams/stream1/x/stream1.mpd",
    "/LiveApp/streams/stream1/stream1.m4s.txt",
    "/LiveApp/streams/drm/stream1.m3u8",
    "/LiveApp/streams/drm/stream1",
    "/LiveApp/streams/drm/stream1/master.txt",
    "/LiveApp/streams/drm/stream1/drm/master.m3u8",
    "/LiveApp/streams/sub/drm/stream1/master.m3u8",
    # Chunked: exactly the stream's folder and one file.
    "/LiveApp/chunked/stream1.m3u8",
    "/LiveApp/chunked/stream1/sub/media_1.m3u8",
    "/LiveApp/chunked/stream1/media_1",
)


@pytest.mark.parametrize("path", NO_STREAM_ID)
def test_no_stream_id(path: str) -> None:
    assert stream_id_of(path) is None


# Whatever the path, a derived id is one Ant Media allows, with no `__`, and it is text of the
# path itself.
_VALID_ID = re.compile(r"(?!\.\.?\Z)(?!.*__)[A-Za-z0-9._-]+")
_PIECES = (
    "/", "_", "__", "-", ".", "a", "7", "240p", "300kbps", "0000", "000000001", ".m3u8", ".ts",
    ".fmp4", ".mp4", ".webm", ".m4s", ".mpd", "_adaptive", "drm", "streams", "chunked",
    "-2021-05-18_11-26-26.842", "%2e", ";", "..",
)


@settings(max_examples=400, deadline=None)
@given(
    head=st.sampled_from(("/LiveApp/streams/", "/LiveApp/chunked/", "/LiveApp/streams/drm/")),
    pieces=st.lists(st.sampled_from(_PIECES), max_size=8),
)
def test_any_path_yields_a_valid_id_or_none(head: str, pieces: list[str]) -> None:
    path = head + "".join(pieces)
    found = stream_id_of(path)
    assert found is None or (_VALID_ID.fullmatch(found) and found.rstrip("_") in path), path
