"""Command line: `authz serve | token | check | demo` (SPEC section 7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from authz.observability import setup_logging
from authz.settings.checks import start_warnings
from authz.settings.errors import SettingsError
from authz.settings.load import load_settings
from authz.settings.model import Settings

__all__ = ["EXIT_INVALID_SETTINGS", "EXIT_USAGE", "build_parser", "main"]

EXIT_INVALID_SETTINGS = 2
EXIT_USAGE = 2

log = logging.getLogger("authz.cli")


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument(
        "--ams-properties", metavar="FILE", help="Ant Media Server red5-web.properties file"
    )


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, args.ams_properties, os.environ)
    except SettingsError as error:
        print(f"authz: {error}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_SETTINGS) from None


def _serve(args: argparse.Namespace) -> int:
    from authz.service.server import run
    from authz.service.workers import is_worker, metrics_registry, supervise

    settings = _settings(args)
    setup_logging(settings.log_level)
    if not is_worker():  # once per pod: a worker leaves them to its supervisor
        for warning in start_warnings(settings):
            log.warning(warning)
    if args.workers > 1:
        return supervise(
            args.workers, args.config, args.ams_properties, settings.drain_delay_seconds
        )
    return asyncio.run(run(settings, metrics_registry()))


def _parse_workers(text: str) -> int:
    from authz.service.workers import parse_workers

    return parse_workers(text)


def _option(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` as an argparse type whose ValueError text reaches the user (exit 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _token(args: argparse.Namespace) -> int:
    from authz.cli.token import TokenOptionError, build_claims, mint_token

    settings = _settings(args)
    issuer = args.iss if args.iss is not None else settings.issuer
    audiences = args.aud if args.aud else settings.audience[:1]
    try:
        claims = build_claims(args.sub, int(time.time()), args.ttl, issuer, audiences, args.claim)
        token = mint_token(settings, claims)
    except TokenOptionError as error:
        print(f"authz token: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return 0


def _add_token_parser(commands: Any) -> None:
    from authz.cli.token import parse_claim, parse_duration

    token = commands.add_parser(
        "token",
        help="mint an HS256 token with the configured secret",
        description="Mint an HS256 token signed with the configured secret (the first one "
        "when several are configured) and print only the token, e.g. "
        'curl -H "Authorization: $(authz token --sub me)" ...',
    )
    _add_settings_arguments(token)
    token.add_argument("--sub", required=True, help="the sub claim (forwarded as x-jwt-sub)")
    token.add_argument(
        "--ttl",
        type=_option(parse_duration),
        default=parse_duration("1h"),
        metavar="DURATION",
        help="lifetime: seconds or units s/m/h/d/w, e.g. 90s, 1h, 7d, 1h30m (default 1h)",
    )
    token.add_argument(
        "--claim",
        type=_option(parse_claim),
        action="append",
        default=[],
        metavar="K=V",
        help="an extra claim; V is JSON when it parses (3, true, [\"a\"]), else a string; "
        "repeatable",
    )
    token.add_argument("--iss", help="the iss claim (default: the configured issuer, if any)")
    token.add_argument(
        "--aud",
        action="append",
        help="an aud value, repeatable (default: the first configured audience, if any)",
    )
    token.set_defaults(handler=_token)


def _check(args: argparse.Namespace) -> int:
    from authz.cli.check import (
        EXIT_ALLOW,
        EXIT_DENY,
        EXIT_ERROR,
        CheckFailedError,
        CheckOptionError,
        build_request,
        format_answer,
        send_check,
    )

    headers: list[tuple[str, str]] = list(args.header)
    if args.token is not None:
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        if any(name == "authorization" for name, _ in headers):
            print("authz check: give the token with --token or an Authorization --header, "
                  "not both", file=sys.stderr)
            return EXIT_ERROR
        headers.append(("authorization", token))
    try:
        request = build_request(headers, args.path, args.method, args.source_ip,
                                dict(args.context))
        answer = send_check(args.target, request, args.timeout)
    except (CheckOptionError, CheckFailedError) as error:
        print(f"authz check: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(format_answer(answer))
    return EXIT_ALLOW if answer.allowed else EXIT_DENY


def _add_check_parser(commands: Any) -> None:
    from authz.cli.check import check_target, parse_context, parse_header

    check = commands.add_parser(
        "check",
        help="send one Check to a running authz and print the decision",
        description="Send one Check to a running authz, as Envoy would, and print the "
        "decision, status, reason and the headers it sets or removes. Exit code: 0 allow, "
        "1 deny, 2 error (bad option, target unreachable or too slow).",
    )
    check.add_argument(
        "--target",
        type=_option(check_target),
        default="127.0.0.1:9001",
        metavar="HOST:PORT",
        help="authz's gRPC address (default 127.0.0.1:9001)",
    )
    check.add_argument(
        "--token", help="the token, sent as the Authorization header; - reads it from stdin"
    )
    check.add_argument(
        "--header",
        type=_option(parse_header),
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header, repeatable",
    )
    check.add_argument("--path", default="/LiveApp/rest/v2/broadcasts/list/0/10",
                       help="request path (default: an Ant Media REST call)")
    check.add_argument("--method", default="GET", help="request method (default GET)")
    check.add_argument("--source-ip", default="127.0.0.1",
                       help="client address as Envoy saw it (default 127.0.0.1)")
    check.add_argument(
        "--context",
        type=_option(parse_context),
        action="append",
        default=[],
        metavar="K=V",
        help="a context_extensions entry, e.g. policy=admin; repeatable",
    )
    check.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                       help="give up after this long (default 5)")
    check.set_defaults(handler=_check)


def _demo(args: argparse.Namespace) -> int:
    from authz.cli.demo import run_demo

    return run_demo(port=args.port, envoy_config=args.envoy_config, tls=args.tls)


def _add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run authz, Envoy and a stand-in Ant Media Server locally",
        description="Run the whole chain on loopback with a freshly generated secret: authz, "
        "the real Envoy on the project's envoy.yaml and a stand-in for Ant Media's REST API; "
        "print curl lines that show allow and deny with their answers. Ctrl-C stops it.",
    )
    demo.add_argument("--port", type=int, default=0,
                      help="Envoy's listen port on 127.0.0.1 (default 0: a free port)")
    demo.add_argument("--envoy-config", metavar="FILE",
                      help="the Envoy config to run (default: the project's envoy.yaml, "
                      "envoy-tls.yaml with --tls)")
    demo.add_argument("--tls", action="store_true",
                      help="mTLS between Envoy and authz, with certificates from a throwaway "
                      "CA made at start")
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    """The `authz` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the ext_authz service")
    _add_settings_arguments(serve)
    serve.add_argument(
        "--workers",
        type=_option(_parse_workers),
        default=1,
        metavar="N",
        help="worker processes sharing the ports (default 1; auto = one per CPU)",
    )
    serve.set_defaults(handler=_serve)
    _add_token_parser(commands)
    _add_check_parser(commands)
    _add_demo_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `authz` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code

