# Sourced by the tests' install scripts: `apt_install NAME PACKAGE...` installs Debian packages
# quietly (sudo when not root, no recommends, no prompts). Package lists that are missing or
# stale (a candidate the mirror no longer has) need an update first; a fresh list installs
# without one, so the update runs only when a first install fails. apt's output is shown only
# on failure, which ends the script with "NAME: ..." on stderr.
apt_install() {
  local name="$1" sudo="" log
  shift
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  log="$(mktemp)"
  _apt_get_install() {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "$@" >>"$log" 2>&1
  }
  if ! _apt_get_install "$@"; then
    if ! $sudo apt-get update -qq >>"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      echo "$name: apt-get update failed" >&2; exit 1
    fi
    if ! _apt_get_install "$@"; then
      cat "$log" >&2; rm -f "$log"
      echo "$name: apt-get install $* failed" >&2; exit 1
    fi
  fi
  rm -f "$log"
}
