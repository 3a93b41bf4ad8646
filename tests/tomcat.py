"""A real Tomcat 10.1 (Debian's tomcat10; tests/install-tomcat.sh installs it) with webapps
shaped like Ant Media Server's, for tests that need to see what a servlet container really
serves for a request: the gateway's path-confusion tests put it behind Envoy.

`tomcat_server()` runs `catalina.sh run` in the foreground with CATALINA_HOME at the
package's /usr/share/tomcat10 and a fresh CATALINA_BASE in a temporary directory: one
HTTP/1.1 connector on 127.0.0.1 and a free port, no shutdown port, no AJP, an access log of
request lines (`Tomcat.requests()`: what the upstream really received), and
Tomcat's default path handling (no allowEncodedSlash, relaxed characters or URI encoding
settings). The webapps:

- `LiveApp` and `StrictApp`: servlets "rest" (`/rest/*`), "streams" (`/streams/*`),
  "chunked" (`/chunked/*`), "websocket" (`/websocket`); everything else goes to Tomcat's
  DefaultServlet, which serves the player page `play.html` and 404s the rest.
- `ROOT` (Ant Media's web panel and server-level REST API): "root-rest" (`/rest/*`) and
  "root-panel" (`/`, everything else).

Each servlet is tests/tomcat_echo.jsp, which answers 200 with a JSON object of what Tomcat
handed it; `served()` reads that into a `Served`. A file a test puts into a webapp, e.g. HLS
files into `tomcat.streams_dir("LiveApp")`, is served instead by Tomcat's DefaultServlet as
Ant Media serves its stream files (resource caching is off, so a rewritten file is served as
it now is). The conftest's session fixture `tomcat` starts one for the whole run; a test
sends bytes with `tomcat.send_raw(...)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz._support.loopback import free_port, stop_process, wait_until
from tests.harness import RawResponse, raw_request, send_raw

CATALINA_HOME = Path("/usr/share/tomcat10")
# The package's pristine global web.xml (DefaultServlet, JspServlet, MIME types, welcome
# files); /etc/tomcat10/web.xml is the admin's copy of it.
GLOBAL_WEB_XML = CATALINA_HOME / "etc" / "web.xml"
ECHO_JSP = Path(__file__).with_name("tomcat_echo.jsp")
CONSOLE_LOG = Path("logs") / "catalina.out"  # in CATALINA_BASE: Tomcat's stdout and stderr
ACCESS_LOG = Path("logs") / "access.log"  # in CATALINA_BASE: one request line per request

# Servlet name -> URL pattern, per webapp.
APP_SERVLETS = {
    "rest": "/rest/*",
    "streams": "/streams/*",
    "chunked": "/chunked/*",
    "websocket": "/websocket",
}
WEBAPPS: dict[str, Mapping[str, str]] = {
    "LiveApp": APP_SERVLETS,
    "StrictApp": APP_SERVLETS,
    "ROOT": {"root-rest": "/rest/*", "root-panel": "/"},
}
PLAYER_PAGE = b"<!DOCTYPE html><title>player</title><p>Ant Media player stand-in</p>\n"
# The first start compiles the JSP once per webapp; a JVM on a busy 2-core machine can take
# most of a minute for that.
START_TIMEOUT = 120.0

_SERVER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Listener className="org.apache.catalina.startup.VersionLoggerListener"/>
  <Service name="Catalina">
    <Connector address="127.0.0.1" port="{port}" protocol="HTTP/1.1"
               maxThreads="16" minSpareThreads="2" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false">
        <Valve className="org.apache.catalina.valves.AccessLogValve" directory="logs"
               prefix="access" suffix=".log" rotatable="false" buffered="false"
               pattern="%r"/>
      </Host>
    </Engine>
  </Service>
</Server>
"""
# Read by Bootstrap into system properties. Skipping every jar's scan (TLDs, fragments,
# annotations) is most of a fast start; EXIT_ON_INIT_FAILURE makes a port that is taken
# after all end the process instead of leaving a Tomcat without its connector.
_CATALINA_PROPERTIES = """\
common.loader="${catalina.base}/lib","${catalina.base}/lib/*.jar",\
"${catalina.home}/lib","${catalina.home}/lib/*.jar"
server.loader=
shared.loader=
tomcat.util.scan.StandardJarScanFilter.jarsToSkip=*
tomcat.util.scan.StandardJarScanFilter.jarsToScan=
org.apache.catalina.startup.EXIT_ON_INIT_FAILURE=true
"""
# Per webapp: no resource cache, so a file a test rewrites is served as it now is.
_CONTEXT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Context><Resources cachingAllowed="false"/></Context>
"""
_JVM_OPTIONS = "-Xms32m -Xmx128m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1"


def _web_xml(servlets: Mapping[str, str]) -> str:
    parts = []
    for name, pattern in servlets.items():
        parts.append(
            f"  <servlet><servlet-name>{name}</servlet-name>"
            "<jsp-file>/WEB-INF/echo.jsp</jsp-file>"
            "<load-on-startup>1</load-on-startup></servlet>\n"
            f"  <servlet-mapping><servlet-name>{name}</servlet-name>"
            f"<url-pattern>{pattern}</url-pattern></servlet-mapping>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0"'
        ' metadata-complete="true">\n' + "".join(parts) + "</web-app>\n"
    )


def write_base(base: Path, port: int) -> None:
    """Lay out a CATALINA_BASE in `base` whose connector listens on 127.0.0.1:`port`."""
    for sub in ("conf", "logs", "temp", "work", "webapps"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "conf" / "server.xml").write_text(_SERVER_XML.format(port=port))
    (base / "conf" / "catalina.properties").write_text(_CATALINA_PROPERTIES)
    shutil.copyfile(GLOBAL_WEB_XML, base / "conf" / "web.xml")
    for app, servlets in WEBAPPS.items():
        web_inf = base / "webapps" / app / "WEB-INF"
        web_inf.mkdir(parents=True)
        (web_inf / "web.xml").write_text(_web_xml(servlets))
        (web_inf.parent / "META-INF").mkdir()
        (web_inf.parent / "META-INF" / "context.xml").write_text(_CONTEXT_XML)
        shutil.copyfile(ECHO_JSP, web_inf / "echo.jsp")
        if "/" not in servlets.values():
            (web_inf.parent / "play.html").write_bytes(PLAYER_PAGE)


def context_path(app: str) -> str:
    """The context path Tomcat deploys webapp directory `app` at ("" for ROOT)."""
    return "" if app == "ROOT" else f"/{app}"


def probe_path(app: str, pattern: str) -> str:
    """A request path that URL `pattern` of `app` maps."""
    path = pattern.removesuffix("*")
    return context_path(app) + (path + "ready" if path.endswith("/") else path)


@dataclass
class Served:
    """What one of the echo servlets was handed (tests/tomcat_echo.jsp's answer)."""

    servlet: str  # the servlet's name: "rest", "streams", "root-rest", ...
    context: str  # its webapp's context path ("/LiveApp"; "" for ROOT)
    context_path: str  # HttpServletRequest.getContextPath(): as the client spelled it
    servlet_path: str  # decoded and normalised, like path_info
    path_info: str | None
    uri: str  # getRequestURI(): the path as received, undecoded, path parameters kept
    query: str | None
    method: str
    pattern: str  # the URL pattern that matched
    header_lines: list[tuple[str, str]]  # (name as received, value), every value
    headers: dict[str, list[str]]  # lowercased name -> values

    @property
    def path(self) -> str:
        """The decoded, normalised path within the webapp (servlet path + path info)."""
        return self.servlet_path + (self.path_info or "")


def served(body: bytes | str | Mapping[str, Any]) -> Served:
    """Read an echo servlet's JSON answer (bytes, text or already parsed)."""
    data = json.loads(body) if isinstance(body, bytes | str) else body
    lines = [(str(name), str(value)) for name, value in data["headers"]]
    headers: dict[str, list[str]] = {}
    for name, value in lines:
        headers.setdefault(name.lower(), []).append(value)
    return Served(
        servlet=data["servlet"],
        context=data["context"],
        context_path=data["contextPath"],
        servlet_path=data["servletPath"],
        path_info=data["pathInfo"],
        uri=data["requestURI"],
        query=data["queryString"],
        method=data["method"],
        pattern=data["pattern"],
        header_lines=lines,
        headers=headers,
    )


@dataclass
class Tomcat:
    """A running Tomcat from `tomcat_server()`."""

    process: subprocess.Popen[bytes]
    port: int
    base: Path  # its CATALINA_BASE, removed when it stops

    @property
    def log_path(self) -> Path:
        """Tomcat's console output (stdout and stderr)."""
        return self.base / CONSOLE_LOG

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[str]:
        """The request lines Tomcat has served so far (`GET /LiveApp/... HTTP/1.1`), as they
        reached it: the query string included."""
        path = self.base / ACCESS_LOG
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def streams_dir(self, app: str = "LiveApp") -> Path:
        """`app`'s streams/ folder on disk, where Ant Media keeps its stream files: what a
        test puts there Tomcat serves at `/{app}/streams/...`."""
        return self.base / "webapps" / app / "streams"

    def send_raw(self, data: bytes, timeout: float = 10.0) -> RawResponse:
        """Send `data` byte for byte to Tomcat and read its answer (harness.send_raw)."""
        return send_raw(self.port, data, timeout)

    def get(
        self, target: str | bytes, headers: tuple[tuple[str, str], ...] = (), method: str = "GET"
    ) -> RawResponse:
        """Send one request for `target`, spelled exactly as given (harness.raw_request)."""
        return self.send_raw(raw_request(target, method, headers))


def _all_served(tomcat: Tomcat, waiting: dict[str, str]) -> bool:
    """Ask each path in `waiting` (path -> servlet) once; drop those their servlet answered."""
    if tomcat.process.poll() is not None:
        raise RuntimeError(f"Tomcat exited with {tomcat.process.returncode}:\n{tomcat.logs()}")
    for path, servlet in list(waiting.items()):
        answer = tomcat.get(path)
        json_answer = (answer.header("content-type") or "").startswith("application/json")
        if answer.status == 200 and json_answer and served(answer.body).servlet == servlet:
            del waiting[path]
    return not waiting


@contextlib.contextmanager
def tomcat_server(start_timeout: float = START_TIMEOUT) -> Iterator[Tomcat]:
    """Start Tomcat on a free loopback port and yield it once every servlet has answered one
    request (which also has Jasper compile the JSP); SIGTERM it (then SIGKILL) at the end."""
    catalina = CATALINA_HOME / "bin" / "catalina.sh"
    if not catalina.exists():
        raise RuntimeError(f"no {catalina}: run tests/install-tomcat.sh")
    with tempfile.TemporaryDirectory(prefix="authz-tomcat-") as tmp:
        base, port = Path(tmp), free_port()
        write_base(base, port)
        # Nothing else from the caller's environment (JAVA_OPTS, CATALINA_*) reaches it.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CATALINA_HOME": str(CATALINA_HOME),
            "CATALINA_BASE": str(base),
            "CATALINA_TMPDIR": str(base / "temp"),
            "CATALINA_OPTS": _JVM_OPTIONS,
        }
        with (base / CONSOLE_LOG).open("wb") as log_file:
            # `catalina.sh run` execs java in the foreground: the SIGTERM goes to the JVM,
            # whose shutdown hook stops Tomcat.
            process = subprocess.Popen(
                [str(catalina), "run"],
                env=env,
                cwd=base,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            tomcat = Tomcat(process, port, base)
            try:
                waiting = {
                    probe_path(app, pattern): servlet
                    for app, servlets in WEBAPPS.items()
                    for servlet, pattern in servlets.items()
                }
                try:
                    wait_until(
                        lambda: _all_served(tomcat, waiting),
                        timeout=start_timeout,
                        what="Tomcat's servlets to answer",
                    )
                except TimeoutError as error:
                    tail = tomcat.logs()[-4000:]
                    raise TimeoutError(f"{error}: {sorted(waiting)}; log:\n{tail}") from error
                yield tomcat
            finally:
                stop_process(process, timeout=15)
