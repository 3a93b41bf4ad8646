#!/usr/bin/env bash
# Installs the OpenID Provider the e2e tests run on loopback: panva's oidc-provider (the
# version pinned in tests/oidc/package.json and its lock) into tests/oidc/node_modules, on
# Node from Debian (nodejs, npm) when no node/npm is on PATH. tests/oidc_provider.py runs
# it with tests/oidc/provider.mjs. Idempotent and quiet; any failure stops the script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/apt-install.sh
. "$here/apt-install.sh"

fail() { echo "install-oidc-provider: $*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install install-oidc-provider nodejs npm
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 18 ] || fail "node $major is too old: oidc-provider 8 needs Node 18 or later"

wanted="$(node -p "require('$here/oidc/package.json').dependencies['oidc-provider']")"
installed() {
  [ -f "$here/oidc/node_modules/oidc-provider/package.json" ] \
    && [ "$(node -p "require('$here/oidc/node_modules/oidc-provider/package.json').version")" = "$wanted" ]
}
if ! installed; then
  log="$(mktemp)"
  if ! (cd "$here/oidc" && npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1); then
    cat "$log" >&2; rm -f "$log"
    fail "npm ci in tests/oidc failed"
  fi
  rm -f "$log"
  installed || fail "oidc-provider $wanted is not in tests/oidc/node_modules after npm ci"
fi
