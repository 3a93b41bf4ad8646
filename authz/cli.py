"""Command line: `authz serve | token | check | demo` (SPEC section 7)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from authz.observability import setup_logging
from authz.settings import Settings, SettingsError, load_settings

EXIT_INVALID_SETTINGS = 2


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
    from authz.server import run

    settings = _settings(args)
    setup_logging(settings.log_level)
    return asyncio.run(run(settings))


def build_parser() -> argparse.ArgumentParser:
    """The `authz` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the ext_authz service")
    _add_settings_arguments(serve)
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `authz` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
