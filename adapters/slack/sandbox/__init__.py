"""A local Slack-compatible server ("the sandbox") for Interlink's demo and tests.

It speaks Slack's Web API, Events API (signed HTTP with retries, and Socket
Mode), OAuth v2 with token rotation, and Slack's rate limits, closely enough
that Slack's official SDKs accept it as Slack. State lives in memory, seeded
from a TOML file (see ``docs/slack-sandbox.md``)::

    sandbox = Sandbox(load_seed("examples/sandbox-seed.toml"))
    url = await nursery.start(sandbox.serve)       # http://127.0.0.1:PORT
    client = WebClient(token="xoxb-interlink", base_url=sandbox.api_url)
"""

from ._cli import main as main
from ._delivery import CommandReply as CommandReply
from ._delivery import DeliveryLog as DeliveryLog
from ._delivery import DeliveryRecord as DeliveryRecord
from ._delivery import DeliveryTiming as DeliveryTiming
from ._delivery import signature as signature
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import RateLimitSettings as RateLimitSettings
from ._ratelimit import RateLimitTable as RateLimitTable
from ._seed import Seed as Seed
from ._seed import load_seed as load_seed
from ._seed import parse_seed as parse_seed
from ._server import Sandbox as Sandbox
from ._server import SandboxSettings as SandboxSettings
from ._server import SandboxStatistics as SandboxStatistics
from ._server import serve_sandbox as serve_sandbox
from ._state import World as World
