#!/usr/bin/env bash
# Installs the media tools the HLS tests use (tests/hls.py): Debian's ffmpeg, whose ffmpeg
# makes a short HLS stream from its testsrc/sine sources and whose ffmpeg and ffprobe play
# it back over HTTP as a player would.
# Idempotent and quiet; any failure stops the script with a message.
set -euo pipefail
# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

fail() { echo "install-ffmpeg: $*" >&2; exit 1; }

installed() {
  command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1
}

if ! installed; then
  apt_install install-ffmpeg ffmpeg
  installed || fail "ffmpeg is installed but ffmpeg or ffprobe is not on PATH"
fi
ffmpeg -hide_banner -version >/dev/null 2>&1 || fail "ffmpeg does not run"
