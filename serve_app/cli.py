"""The `locoserve` command: engine and training commands from `models`, admin commands from
`entitlements`, `submit` (the HTTP API's client) from here. Each command imports what it
needs only when it runs."""

from __future__ import annotations

import argparse
import sys


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("locoserve")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from models import cli as model_cli

    from . import client

    parser = argparse.ArgumentParser(prog="locoserve", description="Locoserve stem separation")
    parser.add_argument("--version", action="version", version=f"locoserve {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    model_cli.register(sub)
    client.register(sub)
    try:
        from entitlements import cli as admin_cli
    except ImportError:  # entitlements not built yet
        admin_cli = None
    if admin_cli:
        admin_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from models.cli import configure_logging

    configure_logging()
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
