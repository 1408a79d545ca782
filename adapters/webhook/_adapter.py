"""The generic HTTP webhook adapter: a partner system as a federated platform.

Inbound, the partner POSTs signed JSON (``_inbound.py``) and the adapter
offers the canonical events to the engine; outbound, :meth:`WebhookAdapter.deliver`
POSTs signed JSON to the partner's URL (``_delivery.py``). Both directions
follow Standard Webhooks (``_signature.py``); the payloads are in ``_schema.py``.

Rules:

- The partner speaks for the domains the directory routes to this adapter
  (``DomainRoute(platform=<name>)``), e.g. ``wendy@partner.localhost``; it
  cannot send as anybody else (403).
- Message ids: a partner message's canonical id is derived from the
  partner's id for it; a message delivered to the partner is stored under
  the id the partner answers with (``{"id": ...}``), else under Interlink's
  own id, which every outbound payload carries.
- One delivery is one ``webhook-id`` (``msg_<Interlink event id>``), the
  same on every attempt and every engine retry: the partner de-duplicates.
- Nothing here keeps protocol state in memory beyond bounded caches that are
  safe to lose: the idempotency table of inbound ``webhook-id``\\ s and one
  "not before" time from the partner's last ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import msgspec
import trio

from engine import (
    Address,
    Backoff,
    Capability,
    Deduplicator,
    DeliveryError,
    DeliveryResult,
    EnginePort,
    Event,
    LocalError,
    Message,
    SessionRecord,
    UnavailableError,
    Untranslatable,
    parse_host_port,
    platform_message_id,
)
from engine.asgi import serve_http

from ._config import WebhookAdapterConfig
from ._delivery import DeliveryPolicy, DeliveryStats, Poster
from ._encode import encode
from ._inbound import InboundStats, WebhookEndpoint
from ._schema import PartnerAnswer
from ._signature import TOLERANCE

log = logging.getLogger("interlink.webhook")

CAPABILITIES: frozenset[Capability] = frozenset({
    "edits", "retractions", "reactions", "contacts", "outcomes", "delivery_receipts"})

_answer_decoder = msgspec.json.Decoder(PartnerAnswer)


@dataclass(frozen=True)
class WebhookSecrets:
    """The keys (decoded ``whsec_`` secrets); the repr hides them."""

    #: keys the partner may sign with (several while it rotates)
    inbound_keys: tuple[bytes, ...]
    #: the key Interlink signs with
    outbound_key: bytes

    def __repr__(self) -> str:
        return f"WebhookSecrets(<{len(self.inbound_keys)} inbound keys redacted>, <redacted>)"


@dataclass(frozen=True)
class WebhookStats:
    inbound: InboundStats
    delivery: DeliveryStats


class WebhookAdapter:
    """One partner: its endpoint (inbound) and its URL (outbound)."""

    def __init__(self, config: WebhookAdapterConfig, *, secrets: WebhookSecrets | None = None,
                 secrets_source: Callable[[], WebhookSecrets] | None = None,
                 http: httpx.AsyncClient | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if (secrets is None) == (secrets_source is None):
            raise LocalError("give the webhook adapter its secrets or a secrets_source")
        self.config = config
        self._secrets = secrets
        self._secrets_source = secrets_source
        self._http = http
        self._wall_clock = wall_clock
        self._host, self._listen_port = parse_host_port(config.listen, "listen")
        self.policy = DeliveryPolicy(
            request_timeout=config.partner_timeout, delivery_budget=config.delivery_budget,
            max_attempts=config.max_attempts, max_retry_after=config.max_retry_after,
            backoff=Backoff(initial=config.retry_initial, maximum=config.retry_maximum))
        self._port: EnginePort | None = None
        self._poster: Poster | None = None
        self._endpoint: WebhookEndpoint | None = None
        #: the port the endpoint listens on, once running
        self.bound_port: int | None = None

    # -- Adapter --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    @property
    def url(self) -> str:
        """The URL the partner POSTs to (once running)."""
        if self.bound_port is None:
            raise LocalError("the webhook adapter is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.bound_port}{self.config.path}"

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        secrets = self._secrets if self._secrets is not None else \
            self._secrets_source()  # type: ignore[misc]
        config = self.config
        async with AsyncExitStack() as stack:
            http = self._http
            if http is None:
                http = await stack.enter_async_context(httpx.AsyncClient(
                    trust_env=False, follow_redirects=False,
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)))
            endpoint = WebhookEndpoint(
                self, keys=secrets.inbound_keys, path=config.path,
                dedupe=Deduplicator(max_entries=config.dedupe_entries, ttl=2 * TOLERANCE),
                wall_clock=self._wall_clock, max_body_bytes=config.max_body_bytes,
                request_timeout=config.request_timeout, max_in_flight=config.max_in_flight,
                busy_retry_after=config.busy_retry_after)
            poster = Poster(url=config.partner_url, key=secrets.outbound_key, http=http,
                            policy=self.policy, wall_clock=self._wall_clock,
                            adapter_stats=port.adapter_stats(self.name))
            self._port, self._poster, self._endpoint = port, poster, endpoint
            try:
                async with trio.open_nursery() as nursery:
                    self.bound_port = await nursery.start(functools.partial(
                        serve_http, endpoint, host=self._host, port=self._listen_port,
                        name="webhook"))
                    log.info("webhook adapter started", extra={"adapter": self.name})
                    task_status.started()
            finally:
                self._port = self._poster = None
                self.bound_port = None

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        port, poster = self._port, self._poster
        if port is None or poster is None:
            raise DeliveryError("adapter-not-running", retryable=True)
        if not self.serves(event.destination):
            raise DeliveryError("not-served", retryable=False)
        directory = port.directory
        try:
            body = encode(event, partner_id=lambda canonical: platform_message_id(
                directory, canonical, self.name))
        except Untranslatable as exc:
            raise DeliveryError(exc.reason, retryable=False) from None
        answer = await poster.post(f"msg_{event.event_id}", body)
        partner_id = _partner_id(answer)
        if isinstance(event, Message):
            return DeliveryResult(platform_message_id=partner_id or event.event_id)
        return DeliveryResult(platform_message_id=partner_id)

    # -- what the endpoint uses -------------------------------------------------------------
    @property
    def engine(self) -> EnginePort:
        if self._port is None:
            raise UnavailableError("the webhook adapter is not running")
        return self._port

    def serves(self, address: Address) -> bool:
        port = self._port
        if port is None:
            return False
        route = port.directory.get_domain_route(address.domain)
        return route is not None and route.platform == self.name

    def statistics(self) -> WebhookStats:
        inbound = self._endpoint.statistics() if self._endpoint is not None else InboundStats()
        delivery = dataclasses.replace(self._poster.stats) if self._poster is not None \
            else DeliveryStats()
        return WebhookStats(inbound=inbound, delivery=delivery)


def _partner_id(answer: bytes) -> str:
    """The partner's id for what it received, when its answer names one (else "")."""
    if not answer.strip():
        return ""
    try:
        found = _answer_decoder.decode(answer).id
    except (msgspec.DecodeError, RecursionError):  # not JSON or not the shape: still delivered
        return ""
    return found if 0 < len(found) <= 256 else ""
