"""The ``interlink`` command line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from engine import ConfigError, InterlinkError, configure_logging

from ._client import (
    MAX_PAGE,
    MAX_SAY_WAIT,
    ClientError,
    add_endpoint_options,
    add_json_option,
    contacts_list,
    contacts_operate,
    contacts_show,
    run_say,
    run_tree,
    sessions_list,
    sessions_operate,
    sessions_restart,
    sessions_show,
)
from ._config import load_config, quiet_loggers


def _version() -> str:
    try:
        return version("interlink")
    except PackageNotFoundError:  # running from a source tree without installing
        import engine

        return engine.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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

    _add_sessions(commands)
    _add_contacts(commands)

    tree = commands.add_parser("tree", help="show the live supervision tree of a running engine",
                               description="Show the running engine's supervision tree with "
                                           "each child's state and restarts.")
    add_endpoint_options(tree)
    add_json_option(tree, "print the tree as JSON")
    tree.set_defaults(handler=run_tree)

    say = commands.add_parser(
        "say", help="send a message as a loopback user or a Slack user of the embedded sandbox",
        description="Send TEXT from --as to --to through the running engine, as the sender "
                    "would on their own platform, and report its outcome. The sender must be "
                    "a user of a loopback platform or a Slack user of the engine's embedded "
                    "Slack sandbox (examples/demo.toml, examples/slack.toml); users of XMPP, "
                    "of the webhook adapter or of a real Slack workspace write in their own "
                    "clients. Exits 0 when the message was delivered (or accepted and still "
                    "in flight after --wait), 1 when it was refused or failed, with the "
                    "reason.")
    say.add_argument("--as", dest="sender", required=True, metavar="ADDR",
                     help="the sender, user@domain (a loopback or sandbox Slack user)")
    say.add_argument("--to", required=True, metavar="ADDR", help="the recipient, user@domain")
    say.add_argument("text", metavar="TEXT",
                     help="the message text (for a Slack user, Slack markup: *bold*, _italic_)")
    say.add_argument("--wait", type=_seconds, default=5.0, metavar="SECONDS",
                     help=f"how long to wait for the outcome (default 5, at most "
                          f"{MAX_SAY_WAIT:g}; 0: report once the engine accepted it)")
    add_endpoint_options(say)
    add_json_option(say, "print the outcome as JSON")
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


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line naming the command and its ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _number_between(cast: Callable[[str], float], kind: str, low: float, high: float,
                    unit: str = "") -> Callable[[str], Any]:
    """An argparse type: ``cast(text)`` within ``[low, high]``, else a one-line error."""
    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"between {low:g} and {high:g}{unit}, not {text}")
        return value
    return parse


_seconds = _number_between(float, "a number of seconds", 0, MAX_SAY_WAIT, " seconds")
_page_size = _number_between(int, "a whole number", 1, MAX_PAGE)


def _add_sessions(commands: Any) -> None:
    sessions = commands.add_parser(
        "sessions", help="list, inspect, restart, stop or start chat sessions of a running "
                         "engine",
        description="Operate on the chat sessions of a running engine through its control API. "
                    "A session is 'running' (active), 'passive' (idle, reactivated on its next "
                    "message) or 'failed' (over its restart budget: messages to it are answered "
                    "with a failure until you restart it). `interlink sessions VERB --help` "
                    "describes each verb.")
    verbs = sessions.add_subparsers(dest="verb", metavar="VERB", required=True)

    listing = verbs.add_parser(
        "list", help="list sessions, filtered, a page at a time",
        description="List the sessions of the running engine as a table (or JSON), a page "
                    "at a time; filters combine.")
    listing.add_argument("--state", choices=["running", "failed", "passive"],
                         help="only sessions in this state")
    listing.add_argument("--domain", metavar="DOMAIN",
                         help="only sessions with a party in this domain")
    listing.add_argument("--user", metavar="ADDR",
                         help="only sessions of this address (user@domain)")
    listing.add_argument("--limit", type=_page_size, default=100, metavar="N",
                         help=f"page size, 1-{MAX_PAGE} (default 100)")
    listing.add_argument("--after", metavar="CURSOR",
                         help="continue after CURSOR (the previous page ends with it)")
    add_endpoint_options(listing)
    add_json_option(listing, 'print {"sessions": [...], "next": CURSOR} as JSON')
    listing.set_defaults(handler=sessions_list)

    show = verbs.add_parser(
        "show", help="one session: state, mailbox depth, restarts, last error and when",
        description="Show one session: its parties, state, mailbox depth, restarts, events "
                    "handled, last error and when, last activity, creation time and its "
                    "conversation on each platform, as aligned `key: value` lines (or JSON).")
    show.add_argument("id", metavar="ID", help="the session id (s-…, from `sessions list`)")
    add_endpoint_options(show)
    add_json_option(show, "print the session as JSON")
    show.set_defaults(handler=sessions_show)

    restart = verbs.add_parser(
        "restart", help="restart a session (a failed one routes again), or every failed one",
        description="Restart a session: its restart budget is reset and a failed session "
                    "takes messages again. With --all-failed, every failed session.")
    which = restart.add_mutually_exclusive_group(required=True)
    which.add_argument("id", metavar="ID", nargs="?", help="the session id (s-…)")
    which.add_argument("--all-failed", action="store_true",
                       help="restart every failed session instead of one")
    add_endpoint_options(restart)
    add_json_option(restart, "print the restarted session (or the list of ids) as JSON")
    restart.set_defaults(handler=sessions_restart)

    for verb, summary, description in (
            ("stop", "passivate a session (it reactivates on its next message)",
             "Passivate a session: it finishes what is in its mailbox, then stops; its "
             "next message reactivates it."),
            ("start", "activate a session now",
             "Activate a session now (a stopped one, or a passive one ahead of its next "
             "message).")):
        operate = verbs.add_parser(verb, help=summary, description=description)
        operate.add_argument("id", metavar="ID", help="the session id (s-…)")
        add_endpoint_options(operate)
        add_json_option(operate, "print the session as JSON")
        operate.set_defaults(handler=sessions_operate, operation=verb)


def _add_contacts(commands: Any) -> None:
    contacts = commands.add_parser(
        "contacts", help="list, inspect, restart, stop or start contact actors of a running "
                         "engine",
        description="Operate on the contact actors (presence and profile fan-out, one per "
                    "address) of a running engine through its control API. `interlink "
                    "contacts VERB --help` describes each verb.")
    verbs = contacts.add_subparsers(dest="verb", metavar="VERB", required=True)

    listing = verbs.add_parser(
        "list", help="list the active contact actors, a page at a time",
        description="List the active contact actors as a table (or JSON), a page at a time.")
    listing.add_argument("--state", choices=["running", "failed"],
                         help="only contact actors in this state")
    listing.add_argument("--limit", type=_page_size, default=100, metavar="N",
                         help=f"page size, 1-{MAX_PAGE} (default 100)")
    listing.add_argument("--after", metavar="CURSOR",
                         help="continue after CURSOR (the previous page ends with it)")
    add_endpoint_options(listing)
    add_json_option(listing, 'print {"contacts": [...], "next": CURSOR} as JSON')
    listing.set_defaults(handler=contacts_list)

    for verb, summary, description in (
            ("show", "one contact actor: state, mailbox depth, restarts, last error",
             "Show one contact actor: its state, mailbox depth, restarts, events handled, "
             "last error and when, last activity, as aligned `key: value` lines (or JSON)."),
            ("restart", "restart a contact actor (a failed one works again)",
             "Restart a contact actor: its restart budget is reset and a failed one fans "
             "out presence and profiles again."),
            ("stop", "passivate a contact actor (it reactivates when needed)",
             "Passivate a contact actor: it finishes its mailbox, then stops; the next "
             "presence or profile change reactivates it."),
            ("start", "activate a contact actor now",
             "Activate a contact actor now.")):
        action = verbs.add_parser(verb, help=summary, description=description)
        action.add_argument("address", metavar="ADDRESS", help="the contact's user@domain")
        add_endpoint_options(action)
        add_json_option(action, "print the contact actor as JSON")
        if verb == "show":
            action.set_defaults(handler=contacts_show)
        else:
            action.set_defaults(handler=contacts_operate, operation=verb)


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
