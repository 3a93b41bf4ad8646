#!/usr/bin/env bash
# Installs the media tools the HLS tests use (tests/hls.py): Debian's ffmpeg, whose ffmpeg
# makes a short HLS stream from its testsrc/sine sources and whose ffmpeg and ffprobe play
# it back over HTTP as a player would.
# Idempotent and quiet; any failure stops the script with a message.
set -euo pipefail

fail() { echo "install-ffmpeg: $*" >&2; exit 1; }

installed() {
  command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1
}

if ! installed; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      ffmpeg >>"$log" 2>&1
  }
  # Package lists that are missing or stale (a candidate the mirror no longer has) need an
  # update first; a fresh list installs without one.
  if ! apt_install; then
    $SUDO apt-get update -qq >>"$log" 2>&1 || { cat "$log" >&2; fail "apt-get update failed"; }
    apt_install || { cat "$log" >&2; fail "apt-get install ffmpeg failed"; }
  fi
  installed || fail "ffmpeg is installed but ffmpeg or ffprobe is not on PATH"
fi
ffmpeg -hide_banner -version >/dev/null 2>&1 || fail "ffmpeg does not run"
