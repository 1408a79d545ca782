"""The ``interlink`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import trio

from engine import ConfigError, InterlinkError, configure_logging, load_config


def _version() -> str:
    try:
        return version("interlink")
    except PackageNotFoundError:  # running from a source tree without installing
        import engine

        return engine.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interlink",
        description="Interlink: chat federation between Slack, XMPP and more, "
                    "with no guest accounts and no stored message content.")
    parser.add_argument("--version", action="version", version=f"interlink {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the engine with the configured adapters",
        description="Run the federation engine until SIGINT or SIGTERM, then stop gracefully "
                    "(no new events, mailboxes drained, logs flushed).")
    run.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    check = commands.add_parser("check-config", help="validate a configuration file and exit",
                                description="Validate a configuration file; exit 0 when valid.")
    check.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(args.config)
        if args.command == "check-config":
            print(f"{args.config}: ok")
            return 0
        configure_logging(config.logging.level, config.logging.format)
        from ._runner import run_engine

        trio.run(run_engine, config)
    except ConfigError as exc:
        print(f"interlink: configuration error: {exc}", file=sys.stderr)
        return 2
    except InterlinkError as exc:
        print(f"interlink: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
