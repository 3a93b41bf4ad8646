#!/usr/bin/env bash
# Installs the tools the deployment tests run for real: prometheus + promtool (Debian),
# kubernetes-validate (PyPI, into the project venv), and checks kubectl's built-in kustomize.
# Idempotent and quiet; any failure stops the script with a message naming the tool.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${AUTHZ_VENV_PYTHON:-$root/.venv/bin/python}"

fail() { echo "install-tools: $*" >&2; exit 1; }

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  # The package's postinst may try to start a system service; there is no init here and the
  # tests start their own server, so only the binaries matter.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || fail "apt-get install prometheus failed"
fi
promtool --version >/dev/null 2>&1 || fail "promtool is installed but does not run"
prometheus --version >/dev/null 2>&1 || fail "prometheus is installed but does not run"

[ -x "$python" ] || fail "no Python at $python (create the venv first or set AUTHZ_VENV_PYTHON)"
if ! "$python" -c "import kubernetes_validate" 2>/dev/null; then
  "$python" -m pip install -q --disable-pip-version-check "kubernetes-validate>=1.37,<2" \
    || fail "pip install kubernetes-validate failed"
fi

# kustomize is built into kubectl (the machine image ships it); no registry reached here has
# a standalone kustomize, so a missing one is reported rather than worked around.
command -v kubectl >/dev/null || fail "kubectl not found: it is needed for 'kubectl kustomize'"
kubectl kustomize --help >/dev/null 2>&1 || fail "this kubectl has no 'kustomize' subcommand"
