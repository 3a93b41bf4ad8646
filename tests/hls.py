"""A real HLS stream, named as Ant Media Server names its files, and a real player for it
(Debian's ffmpeg; tests/install-ffmpeg.sh installs it).

`make_hls()` has ffmpeg encode a few seconds of its `testsrc` picture and `sine` tone into
1-second MPEG-TS segments the way Ant Media's HLSMuxer writes a stream (Ant-Media-Server,
src/main/java/io/antmedia/muxer/HLSMuxer.java at 5130ad8893a2): the playlist
`{streamId}.m3u8` and the segments `{streamId}%09d.ts` (`hls_segment_filename` is the
resource name plus `settings.hlsSegmentFileSuffixFormat`, `%09d`, plus `.ts`), numbered from
0. The playlist is a VOD one (`#EXT-X-ENDLIST`), so a player reads it to the end and stops.

`with_token()` rewrites a playlist as Ant Media's HlsManifestModifierFilter does when the
playlist was asked for with `?token=`: every segment URI gets `?token=<token>` (`&token=`
when it has a query already). `publish()` lays a stream out in a directory a server serves,
e.g. `Tomcat.streams_dir("LiveApp")`.

`play()` plays a URL with `ffmpeg -i URL -c copy -f null -` and says, by its return code,
whether every segment was read: ffmpeg itself exits 0 when a segment fails to open (it
skips it), so a segment it could not open is read from its log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SEGMENT_INDEX_DIGITS = 9  # Ant Media's Muxer.SEGMENT_INDEX_LENGTH, the `%09d` suffix
# Encoding 4 s of a small picture takes well under a second; a busy 2-core machine gets room.
MAKE_TIMEOUT = 120.0
PLAY_TIMEOUT = 60.0
_SEGMENT_URI = re.compile(r"[^?#]*\.(?:ts|m4s)(?:\?.*)?")
# The hls demuxer logs each segment it opens; on a kept-alive connection the http protocol
# logs the reopen instead.
_OPENING = re.compile(r"\[(?:hls|http) @ [^]]*\] Opening '([^']*)' for reading")
_FAILED = re.compile(r"\[hls @ [^]]*\] Failed to open segment")
# What ffmpeg logs after an `Opening` that did not open (it may retry the same URL).
_OPEN_FAILED = re.compile(r"HTTP error|keepalive request failed|Failed to open segment")


@dataclass(frozen=True)
class HlsStream:
    """One stream's HLS files, as `make_hls()` wrote them."""

    stream_id: str
    directory: Path
    playlist: Path  # {stream_id}.m3u8
    segments: tuple[Path, ...]  # {stream_id}000000000.ts, ... in play order

    @property
    def names(self) -> tuple[str, ...]:
        """The file names, playlist first."""
        return (self.playlist.name, *(segment.name for segment in self.segments))


def segment_name(stream_id: str, index: int) -> str:
    """The name Ant Media's HLSMuxer gives segment `index` of `stream_id`."""
    return f"{stream_id}{index:0{SEGMENT_INDEX_DIGITS}d}.ts"


def make_hls(
    directory: Path, stream_id: str, seconds: int = 4, timeout: float = MAKE_TIMEOUT
) -> HlsStream:
    """Encode `seconds` of test picture and tone into `directory` as `stream_id`'s HLS files,
    one segment a second (a key frame each second, 25 fps)."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("no ffmpeg: run tests/install-ffmpeg.sh")
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / f"{stream_id}.m3u8"
    command = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=320x240:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_playlist_type", "vod",
        "-start_number", "0",
        "-hls_segment_filename", str(directory / f"{stream_id}%0{SEGMENT_INDEX_DIGITS}d.ts"),
        str(playlist),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with {done.returncode}:\n{done.stderr}")
    segments = tuple(directory / name for name in segment_uris(playlist.read_text()))
    missing = [path.name for path in segments if not path.is_file()]
    if not segments or missing:
        raise RuntimeError(f"ffmpeg wrote {playlist} naming no or missing segments {missing}")
    return HlsStream(stream_id, directory, playlist, segments)


def segment_uris(playlist_text: str) -> list[str]:
    """The segment URIs of a media playlist, in order (the lines that are no tag)."""
    lines = (line.strip() for line in playlist_text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def with_token(playlist_text: str, token: str) -> str:
    """`playlist_text` with `token=<token>` added to the query of every .ts/.m4s segment URI,
    as Ant Media's HlsManifestModifierFilter adds it (`?`, or `&` after an existing query)."""
    out = []
    for line in playlist_text.splitlines(keepends=True):
        uri = line.rstrip("\r\n")
        if uri and not uri.startswith("#") and _SEGMENT_URI.fullmatch(uri):
            separator = "" if uri.endswith("&") else "&" if "?" in uri else "?"
            line = f"{uri}{separator}token={token}{line[len(uri) :]}"
        out.append(line)
    return "".join(out)


def publish(
    stream: HlsStream,
    directory: Path,
    token: str | None = None,
    without: Iterable[str] = (),
) -> Path:
    """Copy `stream` into `directory` (made if need be) and return the playlist's path there.

    With `token`, the playlist's segment URIs carry it (`with_token`); segments named in
    `without` are left out, so a player finds them missing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    left_out = set(without)
    for segment in stream.segments:
        if segment.name not in left_out:
            shutil.copyfile(segment, directory / segment.name)
    text = stream.playlist.read_text()
    target = directory / stream.playlist.name
    target.write_text(with_token(text, token) if token is not None else text)
    return target


def play(url: str, timeout: float = PLAY_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Play `url` to its end with ffmpeg (demux every segment, decode nothing).

    The return code is 0 only when ffmpeg exited 0 and opened every segment it was sent to;
    1 when its log shows a segment it failed to open; ffmpeg's own code otherwise; -9 when it
    was killed after `timeout` seconds. `segments_read()` lists what it read.
    """
    # rw_timeout (microseconds) ends a read that hangs before the overall timeout does.
    command = [
        "ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
        "-rw_timeout", str(int(timeout * 1_000_000)),
        "-i", url, "-map", "0", "-c", "copy", "-f", "null", "-",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode(errors="replace") if expired.stderr else ""
        stderr += f"\nplay: killed after {timeout} s\n"
        return subprocess.CompletedProcess(command, -9, "", stderr)
    code = done.returncode
    if code == 0 and _FAILED.search(done.stderr):
        code = 1
    return subprocess.CompletedProcess(command, code, done.stdout, done.stderr)


def segments_read(played: subprocess.CompletedProcess[str]) -> list[str]:
    """The segment URLs `play()` opened and read, in order, each once (opens that failed,
    retries included, are left out)."""
    read: list[str] = []
    pending: str | None = None
    for line in played.stderr.splitlines():
        opening = _OPENING.search(line)
        if opening and not opening.group(1).partition("?")[0].endswith(".m3u8"):
            if pending is not None and pending not in read:
                read.append(pending)
            pending = opening.group(1)
        elif pending is not None and _OPEN_FAILED.search(line):
            pending = None
    if pending is not None and pending not in read and played.returncode != -9:
        read.append(pending)
    return read
