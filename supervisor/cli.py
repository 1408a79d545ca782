"""The ``interlink`` command line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from engine import ConfigError, InterlinkError, configure_logging

from ._client import (
    ClientError,
    add_endpoint_options,
    run_contacts,
    run_say,
    run_sessions,
    run_tree,
)
from ._config import load_config, quiet_loggers


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
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration file and exit",
                                description="Validate a configuration file; exit 0 when valid.")
    check.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    check.set_defaults(handler=_check_config)

    secrets_parser = commands.add_parser(
        "secrets", help="the key that encrypts stored credentials: new key, rotation",
        description="Installation credentials (bot and refresh tokens) are encrypted in the "
                    "directory with the key from [secrets] (environment variable, else key "
                    "file). `new-key` prints a fresh key; `rotate` re-encrypts everything with "
                    "the first configured key; `rotate --new-key` rotates the key file in one "
                    "step. Stop the engine before rotating.")
    secrets_actions = secrets_parser.add_subparsers(dest="secrets_action", metavar="ACTION",
                                                    required=True)
    new_key = secrets_actions.add_parser("new-key", help="print a fresh key",
                                         description="Print a fresh key (for the key file or "
                                                     "the environment variable).")
    new_key.set_defaults(handler=_secrets_new_key)
    rotate = secrets_actions.add_parser(
        "rotate", help="re-encrypt stored credentials with the first key",
        description="Re-encrypt every stored credential with the first configured key (the "
                    "others still decrypt). With --new-key: write a new key first in the key "
                    "file, re-encrypt, then keep only the new key. The engine must be stopped.")
    rotate.add_argument("--config", required=True, metavar="FILE",
                        help="TOML configuration file")
    rotate.add_argument("--new-key", action="store_true",
                        help="generate the new key and rotate the key file in one step")
    rotate.set_defaults(handler=_secrets_rotate)

    sessions = commands.add_parser(
        "sessions", help="list, inspect, restart or stop chat sessions of a running engine",
        description="Operate on the chat sessions of a running engine through its control API. "
                    "A session is 'running' (active), 'passive' (idle, reactivated on its next "
                    "message) or 'failed' (over its restart budget: messages to it are answered "
                    "with a failure until you restart it).")
    sessions.add_argument("action", choices=["list", "show", "restart", "stop", "start"])
    sessions.add_argument("id", nargs="?", help="session id (s-…), for show/restart/stop/start")
    sessions.add_argument("--state", choices=["running", "failed", "passive"],
                          help="list only sessions in this state")
    sessions.add_argument("--domain", help="list only sessions with a party in this domain")
    sessions.add_argument("--user", metavar="ADDR", help="list only sessions of this address")
    sessions.add_argument("--limit", type=int, default=100, help="page size (1-500)")
    sessions.add_argument("--after", metavar="CURSOR", help="continue a listing after CURSOR")
    sessions.add_argument("--all-failed", action="store_true",
                          help="with restart: restart every failed session")
    add_endpoint_options(sessions)
    sessions.set_defaults(handler=run_sessions)

    contacts = commands.add_parser(
        "contacts", help="list, inspect, restart or stop contact actors of a running engine",
        description="Operate on the contact actors (presence and profile fan-out) of a running "
                    "engine.")
    contacts.add_argument("action", choices=["list", "show", "restart", "stop", "start"])
    contacts.add_argument("address", nargs="?", help="the contact's user@domain")
    contacts.add_argument("--state", choices=["running", "failed"])
    contacts.add_argument("--limit", type=int, default=100, help="page size (1-500)")
    contacts.add_argument("--after", metavar="CURSOR")
    add_endpoint_options(contacts)
    contacts.set_defaults(handler=run_contacts)

    tree = commands.add_parser("tree", help="show the live supervision tree of a running engine",
                               description="Show the running engine's supervision tree with "
                                           "each child's state and restarts.")
    add_endpoint_options(tree)
    tree.set_defaults(handler=run_tree)

    say = commands.add_parser(
        "say", help="send a message as a user of a loopback platform or the Slack sandbox",
        description="Send TEXT from --as to --to through the running engine, as if the sender "
                    "had written it on their (loopback) platform.")
    say.add_argument("--as", dest="sender", required=True, metavar="ADDR")
    say.add_argument("--to", required=True, metavar="ADDR")
    say.add_argument("text")
    add_endpoint_options(say)
    say.set_defaults(handler=run_say)

    demo = commands.add_parser(
        "demo", help="tour every federation feature through the running demo",
        description="With --script: act as John on Slack (the embedded sandbox) and as Peter "
                    "on XMPP (the embedded Prosody) through a running `interlink run --config "
                    "examples/demo.toml`; each step is printed once the other side observed "
                    "it. Exits 1 when a step is not observed, 2 when the demo is not running.")
    demo.add_argument("--script", action="store_true", required=True,
                      help="run the scripted conversation (the only mode for now)")
    demo.add_argument("--config", default="examples/demo.toml", metavar="FILE",
                      help="the demo's configuration (default: examples/demo.toml)")
    demo.set_defaults(handler=_demo)

    # Listed for --help; main() hands their arguments to their own parsers.
    commands.add_parser("slack-sandbox", add_help=False,
                        help="run the local Slack-compatible server "
                             "(interlink slack-sandbox --help)")
    commands.add_parser("bench", add_help=False,
                        help="run a benchmark suite (interlink bench --help)")
    return parser


def _delegated(command: str) -> Callable[[Sequence[str]], int] | None:
    """Commands with their own argument parsers, run with the rest of the line."""
    if command == "slack-sandbox":
        from adapters.slack.sandbox import main as sandbox_main

        return sandbox_main
    if command == "bench":
        from bench.cli import main as bench_main

        return bench_main
    return None


def _run(args: argparse.Namespace) -> int:
    import trio

    from ._runner import run_engine

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format, quiet=quiet_loggers())
    trio.run(functools.partial(run_engine, config, config_path=args.config))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import trio

    from ._demo import run_script

    config = load_config(args.config)
    code: int = trio.run(run_script, config, sys.stdout)
    return code


def _secrets_new_key(args: argparse.Namespace) -> int:
    from ._secrets_cli import run_new_key

    return run_new_key(args)


def _secrets_rotate(args: argparse.Namespace) -> int:
    from ._secrets_cli import SecretsError, run_rotate

    try:
        return run_rotate(args)
    except SecretsError as exc:
        print(f"interlink: {exc}", file=sys.stderr)
        return 1


def _check_config(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: ok")
    return 0


def _first_interlink_error(error: BaseException) -> InterlinkError | None:
    """Trio wraps task errors in groups; find the one worth reporting."""
    if isinstance(error, InterlinkError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_interlink_error(inner)
            if found is not None:
                return found
    return None


def _root_cause(error: InterlinkError) -> InterlinkError:
    """The innermost Interlink error behind ``error`` (through causes and task groups).

    Interlink's own errors carry no content (only ids, addresses, reasons), so their
    messages are safe to show; foreign exceptions are not looked into.
    """
    seen: set[int] = set()
    current: InterlinkError = error
    while id(current) not in seen:
        seen.add(id(current))
        cause = current.__cause__ or current.__context__
        inner = _first_interlink_error(cause) if cause is not None else None
        if inner is None:
            return current
        current = inner
    return current


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    delegate = _delegated(arguments[0]) if arguments else None
    if delegate is not None:
        return delegate(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"interlink: configuration error: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"interlink: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (InterlinkError, BaseExceptionGroup) as exc:
        found = _first_interlink_error(exc)
        if found is None:
            raise
        print(f"interlink: {found}", file=sys.stderr)
        cause = _root_cause(found)
        if cause is not found:  # e.g. the missing secret behind a supervisor's escalation
            print(f"interlink: because: {cause}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
