#!/usr/bin/env bash
# Installs the servlet container the gateway tests run behind Envoy: Debian's tomcat10
# (Tomcat 10.1). Its dependencies bring Java and the Eclipse JDT compiler Jasper compiles
# JSPs with (libeclipse-jdt-core-java, on jasper's Class-Path). tests/tomcat.py runs it as a
# foreground process with its own CATALINA_BASE, never as a system service.
# Idempotent and quiet; any failure stops the script with a message.
set -euo pipefail
# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/apt-install.sh"

home=/usr/share/tomcat10
fail() { echo "install-tomcat: $*" >&2; exit 1; }

installed() {
  [ -x "$home/bin/catalina.sh" ] && [ -f "$home/bin/bootstrap.jar" ] \
    && [ -f /usr/share/java/tomcat10-jasper.jar ] && [ -f /usr/share/java/eclipse-jdt-core.jar ]
}

if ! installed; then
  # The package's postinst may try to start the tomcat10 service; there is no init here and
  # the tests start their own Tomcat, so only the files matter.
  apt_install install-tomcat tomcat10
  installed || fail "tomcat10 is installed but $home or Jasper's compiler is missing"
fi
java -version >/dev/null 2>&1 || fail "java does not run (tomcat10's dependencies bring it)"
