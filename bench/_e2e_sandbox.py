"""``python -m bench._e2e_sandbox --seed FILE --port 0 --limits slack``: the Slack sandbox
with Slack's posting limits modelled, in its own process, for ``bench e2e``.

``interlink slack-sandbox`` has only ``--no-rate-limits`` (limits on or off, Slack's
tier numbers). The suite's "slack" pacing needs one change to them: tier 1 (1 call a
minute) is raised to 60 a minute, because ``apps.connections.open`` is tier 1 and the
raw baseline's Socket Mode connection and then the engine's each open one per app within
a minute. Everything that paces posting is Slack's: ``chat.postMessage`` at 1 message
per second per channel with a burst of 3, and 600 a minute per app (or person) per
workspace (the sandbox's "special" tier), tiers 2-4 at 20/50/100 a minute. Until the
sandbox takes its limits from TOML (issue #22 item 2) this launcher builds the
``RateLimitSettings`` itself. It prints the same ready line as ``interlink slack-sandbox``
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings, load_seed

#: Slack's tiers per minute (1-4, then "special"), tier 1 raised for the connection opens
SLACK_PER_MINUTE = (60.0, 20.0, 50.0, 100.0, 600.0)
SLACK_POSTS_PER_CHANNEL_PER_S = 1.0
SLACK_POST_BURST = 3


def slack_limits() -> RateLimitSettings:
    return RateLimitSettings(enabled=True, per_minute=SLACK_PER_MINUTE,
                             post_message_per_second=SLACK_POSTS_PER_CHANNEL_PER_S,
                             post_message_burst=SLACK_POST_BURST)


async def _run(sandbox: Sandbox, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_serve, sandbox, port)
            print(f"Slack sandbox listening on {url} (Web API: {url}/api/)", flush=True)
            async for _ in signals:
                break
            sandbox.stop()


async def _serve(sandbox: Sandbox, port: int, *,
                 task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    await sandbox.serve(host="127.0.0.1", port=port, task_status=task_status)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._e2e_sandbox")
    parser.add_argument("--seed", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--limits", choices=("slack", "off"), default="slack")
    args = parser.parse_args(argv)
    limits = slack_limits() if args.limits == "slack" else RateLimitSettings(enabled=False)
    sandbox = Sandbox(load_seed(args.seed), settings=SandboxSettings(rate_limits=limits))
    trio.run(_run, sandbox, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
