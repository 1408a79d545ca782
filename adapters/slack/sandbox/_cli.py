"""``interlink slack-sandbox``: run the sandbox from a seed file until SIGINT/SIGTERM.

Exit codes: 0 after a clean stop, 2 for a bad seed or bad options (one line
naming the file, field and expectation), 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec
import trio

from engine import ConfigError, configure_logging

from ._delivery import DeliveryTiming
from ._ratelimit import RateLimitSettings
from ._seed import Seed, load_seed
from ._server import Sandbox, SandboxSettings

PROG = "interlink slack-sandbox"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {port}")
    return port


def _factor(text: str) -> float:
    try:
        factor = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not factor > 0:
        raise argparse.ArgumentTypeError(f"the factor must be above 0, got {text}")
    return factor


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= rate < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return rate


def rate_limits_of(args: argparse.Namespace, seed: Seed) -> RateLimitSettings:
    """The limits the options and the seed ask for: flags over the seed over Slack's."""
    if args.no_rate_limits:
        return RateLimitSettings(enabled=False)
    limits = seed.rate_limits.settings() if seed.rate_limits is not None \
        else RateLimitSettings()
    changes = {name: value for name, value in (
        ("post_message_per_second", args.channel_rate),
        ("post_message_burst", args.channel_burst),
        ("post_message_workspace_per_minute", args.workspace_rate),
        ("post_message_workspace_burst", args.workspace_burst)) if value is not None}
    return msgspec.structs.replace(limits, **changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a local Slack-compatible server (Web API, Events API over HTTP and "
                    "Socket Mode, OAuth, rate limits) seeded from a TOML file, until SIGINT or "
                    "SIGTERM. Point Slack SDKs at http://HOST:PORT/api/.",
        epilog="The seed format is described in docs/slack-sandbox.md; "
               "examples/sandbox-seed.toml is a starting point.")
    parser.add_argument("--port", required=True, type=_port,
                        help="TCP port to listen on (0 picks a free one)")
    parser.add_argument("--seed", required=True, metavar="FILE",
                        help="TOML seed: workspaces, users, channels and apps")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    limits = parser.add_argument_group(
        "rate limits", "Slack's by default, or the seed's [rate_limits]; these flags "
                       "replace single values")
    limits.add_argument("--no-rate-limits", action="store_true",
                        help="answer every call: never HTTP 429")
    limits.add_argument("--channel-rate", type=_factor, metavar="PER_SECOND",
                        help="chat.postMessage per channel, messages per second (Slack: 1)")
    limits.add_argument("--channel-burst", type=_count, metavar="N",
                        help="chat.postMessage per channel, burst (default 3)")
    limits.add_argument("--workspace-rate", type=_rate, metavar="PER_MINUTE",
                        help="chat.postMessage per app per workspace, messages per minute "
                             "(0: no limit, the default)")
    limits.add_argument("--workspace-burst", type=_count, metavar="N",
                        help="chat.postMessage per app per workspace, burst (default 50)")
    parser.add_argument("--retry-scale", type=_factor, default=1.0, metavar="FACTOR",
                        help="multiply Slack's event retry delays (0 s, 1 min, 5 min) by FACTOR, "
                             "e.g. 0.01 for tests (default 1)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="least severe log records written (default %(default)s)")
    parser.add_argument("--log-format", default="text", choices=["json", "text"],
                        help="log lines as text or one JSON object each (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``interlink slack-sandbox`` with ``argv`` (the words after the command)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        seed = load_seed(args.seed)
    except ConfigError as exc:
        print(f"{PROG}: seed error: {exc}", file=sys.stderr)
        return 2
    settings = SandboxSettings(
        rate_limits=rate_limits_of(args, seed),
        timing=DeliveryTiming(retry_scale=args.retry_scale))
    sandbox = Sandbox(seed, settings=settings)
    with _logging(args.log_level, args.log_format):
        try:
            trio.run(_run, sandbox, args.host, args.port)
        except KeyboardInterrupt:
            return 130
        except (OSError, BaseExceptionGroup) as exc:
            found = _os_error(exc)
            if found is None:
                raise
            reason = "address already in use" if found.errno == errno.EADDRINUSE \
                else (found.strerror or str(found))
            print(f"{PROG}: cannot listen on {args.host}:{args.port}: {reason}",
                  file=sys.stderr)
            return 1
    return 0


@contextmanager
def _logging(level: str, fmt: str) -> Iterator[None]:
    """Structured logs on stderr while running; the caller's logging set-up is restored."""
    root = logging.getLogger("interlink")
    saved = (list(root.handlers), root.level, root.propagate)
    configure_logging(level, fmt)
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


async def _run(sandbox: Sandbox, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_serve, sandbox, host, port)
            print(f"Slack sandbox listening on {url} (Web API: {url}/api/)", flush=True)
            async for _ in signals:
                break
            sandbox.stop()


async def _serve(sandbox: Sandbox, host: str, port: int, *,
                 task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    await sandbox.serve(host=host, port=port, task_status=task_status)


def _os_error(error: BaseException) -> OSError | None:
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None
