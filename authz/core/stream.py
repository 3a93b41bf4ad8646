"""Ant Media stream ids: which stream a media file path belongs to, read from the file names
Ant Media Server gives its HLS, DASH, LL-HLS, MP4 and WebM files.

The rules are Ant Media's own: `TokenFilterManager.getStreamId(requestURI, suffixFormat)` in
`src/main/java/io/antmedia/filter/TokenFilterManager.java` (ant-media/Ant-Media-Server, read
at commit 5130ad8893a2), with the names its muxers write (`Muxer.getExtendedName`,
`HLSMuxer`) and the cases of its `TokenFilterTest.testGetStreamId`. That method looks for
markers anywhere in the URI and cuts at the last `_`, `.` or `/`; here the same marker picks
the same rule, in Ant Media's order, and the rule's file-name form is then matched strictly.
So a path yields either Ant Media's stream id or None (`no_stream_id`), never an id Ant Media
would not derive; None also where Ant Media's id would be wrong or ambiguous, since a wrong
id could match another stream's token. Only Ant Media's default segment suffix
(`settings.hlsSegmentFileSuffixFormat`, `%09d`) is known.
"""

from __future__ import annotations

import re

__all__ = ["stream_id_of"]

# Every segment holds only what Ant Media's StreamIdValidator allows in a stream id (letters,
# digits, `.`, `_`, `-`) and is no dot segment, so no percent-encoding, path parameter,
# backslash or odd byte can make the servlet container serve another file than the one named.
_PATH = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._-]+)+")
_MEDIA_EXTENSIONS = (".m3u8", ".ts", ".fmp4", ".m4s", ".mpd", ".mp4", ".mp3", ".webm")
_ADAPTIVE = "_adaptive.m3u8"
# Fragments. A rendition suffix, as Muxer.getExtendedName appends it after a `_`: a height
# (`240p`), a bitrate (`300kbps`) or both, or (Ant Media's segment rules) several such parts.
_ONE_RENDITION = r"(?:[0-9]+p|[0-9]+kbps|[0-9]+p[0-9]+kbps)"
_RENDITION = r"(?:[0-9]+(?:p|kbps))+"
_HEIGHT_KBPS = r"[0-9]+p[0-9]+kbps"
_SEGMENT_EXT = r"(?:ts|fmp4)"
_RECORDING_EXT = r"(?:mp4|mp3|webm)"
_START_TIME = r"-[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}\.[0-9]{3}"

# The markers that pick Ant Media's rule, matched as loosely as Ant Media matches them (its
# unescaped `.`s included) over the same text, so a path takes the rule Ant Media takes.
_PICK_RESOLUTION_PLAYLIST = re.compile(rf".*_{_ONE_RENDITION}.m3u8")
_PICK_DATETIME = re.compile(r"-20[0-9]{2,}-+[0-9]{2}")
_PICK_RESOLUTION_BITRATE = re.compile(r"_[0-9]+p+[0-9]+kbps")
_PICK_UNDERSCORE_NUMBER = re.compile(r"_[0-9]")
# Segments: (marker, strict form whose group 1 is the id), in Ant Media's order: a
# rendition's 9-digit index, its 4-digit index, a 9-digit index, a 4-digit index.
_SEGMENT_RULES = tuple(
    (
        re.compile(rf".*{middle}[0-9]{{{digits}}}.{_SEGMENT_EXT}"),
        re.compile(rf"(.*){middle}[0-9]{{{digits}}}\.{_SEGMENT_EXT}"),
    )
    for middle, digits in ((f"_{_RENDITION}", 9), (f"_{_RENDITION}", 4), ("", 9), ("", 4))
)

# Strict forms, matched on the file name; group 1 is the id.
_RESOLUTION_PLAYLIST = re.compile(rf"(.*)_{_ONE_RENDITION}\.m3u8")
_RECORDING_DATETIME = re.compile(  # group 2: the rendition, group 3: the copy number
    rf"(.*){_START_TIME}(_{_HEIGHT_KBPS})?(_[0-9]+)?\.{_RECORDING_EXT}"
)
_RECORDING_RENDITION = re.compile(rf"(.*)_{_HEIGHT_KBPS}(_[0-9]+)?\.{_RECORDING_EXT}")
_RECORDING = re.compile(r"(.*)\.(mp4|mp3|webm)")
_RECORDING_SUFFIX = re.compile(r"[0-9]+(?:p|kbps)?")
_ENDS_IN_RENDITION = re.compile(rf"_{_RENDITION}\Z")
# After `__`: an LL-HLS part name (a word), or the rendition suffix of an id ending in `_`.
_LL_HLS_TAIL = re.compile(rf"[A-Za-z][A-Za-z0-9._-]*\.(?:m3u8|{_SEGMENT_EXT}|{_RECORDING_EXT})")
_KBPS_TAIL = re.compile(
    rf"(?:[0-9]+p)?[0-9]+kbps(?:(?:[0-9]{{9}}|[0-9]{{4}})?\.(?:m3u8|{_SEGMENT_EXT})"
    rf"|(?:_[0-9]+)?\.{_RECORDING_EXT})"
)


def stream_id_of(path: str) -> str | None:
    """The Ant Media stream id a media file path belongs to; None when none can be derived.

    `path` is the request path without its query string, context path first, e.g.
    `/LiveApp/streams/stream1_240p300kbps000000012.ts`. The forms, `{id}` a stream id:

    - `/{app}/streams/drm/{id}/{file}`: a DRM stream's folder names it.
    - `/{app}/streams/{id}/{file}.m4s|.mpd`: a DASH stream's folder names it.
    - `/{app}/chunked/{id}/{file}`: an LL-HLS (chunked transfer) stream's folder names it.

    Anywhere below `/{app}/streams/`, subfolders included, by file name:

    - `{id}_adaptive.m3u8`: the adaptive (multi-bitrate) master playlist.
    - `{id}__{part}`: an LL-HLS file (`__lowlatency.m3u8`, `__master.m3u8`, `__...ts`);
      a `{rendition}` part with `kbps` is the rendition of id `{id}_` instead.
    - `{id}_{rendition}.m3u8`: one rendition's playlist (`_240p`, `_500kbps`, `_240p300kbps`).
    - `{id}.m3u8`: the playlist.
    - `{id}_{rendition}{index}.ts|.fmp4`: a rendition's segment, a 9-digit index (or the
      4-digit index of older versions).
    - `{id}{index}.ts|.fmp4`: a segment, 9 digits tried before 4.
    - `{id}-{yyyy-MM-dd_HH-mm-ss.SSS}[_{height}p{kbps}kbps][_{n}].mp4|.mp3|.webm`: a recording
      named with its start time.
    - `{id}_{height}p{kbps}kbps[_{n}].mp4|.mp3|.webm`: a rendition's recording.
    - `{id}[_{n}|_{height}p|_{kbps}kbps].mp4|.mp3|.webm`: a recording, `_{n}` the n-th of
      one stream.

    None for any other path, for a segment that is empty, `.` or `..` or holds a byte outside
    `A-Z a-z 0-9 . _ -`, for an id that is empty, `.`, `..` or holds `__`, and where a marker
    Ant Media looks for anywhere (`streams`, `chunked`, `drm`, `m4s`, `mpd`, `.m3u8`, `__`,
    a rendition, a start time, `_{digit}`) sits where its rule does not expect it.
    """
    if not _PATH.fullmatch(path):
        return None
    segments = path.split("/")  # ["", app, area, ...]
    if len(segments) < 4:
        return None
    area = segments[2]
    if area == "streams" and path.count("streams") == 1:
        return _in_streams("/" + "/".join(segments[3:]), segments[3:])
    if area == "chunked" and "streams" not in path:
        return _in_chunked(path, segments[3:])
    return None


def _valid(stream_id: str) -> str | None:
    if not stream_id or stream_id in (".", "..") or "__" in stream_id:
        return None
    return stream_id


def _media(name: str) -> bool:
    return name.endswith(_MEDIA_EXTENSIONS)


def _in_chunked(path: str, parts: list[str]) -> str | None:
    # Ant Media tests for DASH (`m4s`, `mpd`) first, over the whole path, and splits on
    # `chunked`: either elsewhere would take another rule or another folder.
    if "m4s" in path or "mpd" in path or path.count("chunked") != 1:
        return None
    if len(parts) != 2 or not _media(parts[1]):
        return None
    return _valid(parts[0])


def _in_streams(rest: str, parts: list[str]) -> str | None:
    # `rest`: the path after `/{app}/streams`, all that Ant Media reads from here on.
    name = parts[-1]
    if parts[0] == "drm":
        if len(parts) < 3 or "drm" in parts[2:] or not _media(name):
            return None
        return _valid(parts[1])
    if "drm" in parts[:-1]:
        return None  # a DRM-like folder deeper down: its files need not carry its id
    if "m4s" in rest or "mpd" in rest:
        if len(parts) != 2 or not name.endswith((".m4s", ".mpd")):
            return None
        return _valid(parts[0])
    if "chunked" in rest:
        return None
    if _ADAPTIVE in rest:
        return _valid(name[: -len(_ADAPTIVE)]) if name.endswith(_ADAPTIVE) else None
    if "__" in rest:
        return _low_latency(name)
    if _PICK_RESOLUTION_PLAYLIST.fullmatch(rest):
        return _group(_RESOLUTION_PLAYLIST, name)
    if ".m3u8" in rest:
        return _valid(name[: -len(".m3u8")]) if name.endswith(".m3u8") else None
    if rest.endswith(("ts", "fmp4")):  # what every segment marker ends with
        for pick, form in _SEGMENT_RULES:
            if pick.fullmatch(rest):
                return _group(form, name)
    return _recording(rest, name)


def _group(form: re.Pattern[str], name: str) -> str | None:
    match = form.fullmatch(name)
    return _valid(match.group(1)) if match else None


def _low_latency(name: str) -> str | None:
    # Ant Media splits at the last `__`; with one `__` and no `___` the first is the last and
    # the id cannot hold `__`.
    if name.count("__") != 1 or "___" in name:
        return None
    stem, _, tail = name.partition("__")
    if "kbps" in tail:
        # `{id}_` + `_{rendition}`: Ant Media's reading of an id that ends in `_`.
        return _valid(stem + "_") if _KBPS_TAIL.fullmatch(tail) else None
    # A tail starting with a digit could be the `_{n}` or `_{height}p` suffix of id `{stem}_`.
    return _valid(stem) if _LL_HLS_TAIL.fullmatch(tail) else None


def _recording(rest: str, name: str) -> str | None:
    # Ant Media picks the rule by a start time or rendition anywhere in `rest`, subfolders
    # included, then cuts the file name; the forms below are where its cuts land on the id.
    if _PICK_DATETIME.search(rest):
        match = _RECORDING_DATETIME.fullmatch(name)
        if match is None:
            return None
        rendition, copy = match.group(2), match.group(3)
        if _PICK_RESOLUTION_BITRATE.search(rest):
            return _valid(match.group(1)) if rendition else None
        return _valid(match.group(1)) if copy is None else None
    if _PICK_RESOLUTION_BITRATE.search(rest):
        match = _RECORDING_RENDITION.fullmatch(name)
        if match is None:
            return None
        stream_id = match.group(1)
        # Without `_{n}` Ant Media cuts once more when the id itself looks like a rendition.
        if match.group(2) is None and _PICK_RESOLUTION_BITRATE.search(stream_id):
            return None
        return _valid(stream_id)
    match = _RECORDING.fullmatch(name)
    if match is None:
        return None
    base, extension = match.group(1), match.group(2)
    if _PICK_UNDERSCORE_NUMBER.search(rest):
        # Ant Media cuts at the last `_`: the id is what precedes a `_{n}`-like suffix.
        stream_id, underscore, suffix = base.rpartition("_")
        if not underscore or not _RECORDING_SUFFIX.fullmatch(suffix):
            return None
        # `a_240p_1`: the 2nd recording of `a_240p`, or of a's 240p rendition.
        return None if _ENDS_IN_RENDITION.search(stream_id) else _valid(stream_id)
    if extension == "webm" and (".mp4" in rest or ".mp3" in rest):
        return None  # Ant Media would cut at that `.mp4` / `.mp3` instead
    return _valid(base)
