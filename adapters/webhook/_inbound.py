"""The partner's requests to Interlink: the ASGI app behind ``POST {path}``.

What happens to a request, in order (the first rule that applies decides);
"recorded" means an ``error`` entry through ``EnginePort.record_rejected``::

    GET /healthz                                                200  {"status": "ok"}
    any other path / method                                     404 / 405
    more than max_in_flight requests being handled              503  Retry-After
    Content-Length above max_body_bytes, or the body grows past 413  recorded
    body not received within request_timeout                   408
    webhook-id / -timestamp / -signature missing or malformed   401  recorded
    timestamp more than 5 minutes from this server's clock      401  recorded
    no v1 signature matches the inbound secret(s)               401  recorded
    webhook-id accepted before (within 10 minutes)              200  "duplicate", nothing routed
    webhook-id being handled by another request                 wait for it, then as above
    not JSON, not the schema, bad address, empty message        400  recorded
    "from" in a domain this adapter does not serve              403  recorded (sender-not-served)
    the router would refuse: no route / unknown address         404  recorded
    the router would refuse: policy (agreement, user, contact)  403  recorded
    the conversation's mailbox is full, or the engine stops     503  Retry-After, nothing routed
    the engine took the event                                   202  "accepted", Interlink's id

A replay of an accepted ``webhook-id`` is answered 200, not an error: the
Standard Webhooks sender retries until it hears 2xx, so a retry whose first
attempt's answer was lost must succeed without routing the event twice.
Every refusal has a JSON body ``{"error": code, "message": text}``; the
message names fields, never values. Nothing is routed before the signature
is verified, and 2xx means the engine has the event.

Measurements go to the adapter's :class:`engine.AdapterStats`
(``engine.adapter_stats(name)``): a de-duplication hit for every replay
answered "duplicate"; as inbound ``type="unknown"``: ``busy`` for the 503s
before the body is read, ``malformed`` for the 400s and 413s; ``refused`` for
``sender-not-served``. The engine's port counts the rest (the router's
refusals asked here, busy conversations, accepted events).

Logs carry webhook ids, codes, statuses and event kinds, never bodies or secrets.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import trio

from engine import (
    UNKNOWN_TYPE,
    AdapterStats,
    Address,
    Claim,
    Deduplicator,
    EnginePort,
    Event,
    UnavailableError,
)
from engine.asgi import (
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    answer_lifespan,
    header_map,
    read_body,
    respond,
)

from ._decode import IdResolver, PayloadError, decode_body, parties, to_event
from ._signature import SignatureError, verify

log = logging.getLogger("interlink.webhook.inbound")

#: who the error entry of a request names when the request does not say (or cannot be trusted)
UNKNOWN = Address(user="unknown", domain="invalid")
#: router refusal reasons answered 404 (the address is not there); every other reason is 403
_NOT_FOUND_PREFIXES = ("no-route", "unknown-address", "platform-unavailable")


class Intake(Protocol):
    """What the endpoint needs of the adapter."""

    @property
    def name(self) -> str: ...

    @property
    def engine(self) -> EnginePort:
        """The engine (raises while the adapter is not running)."""
        ...

    def serves(self, address: Address) -> bool:
        """Whether ``address``'s domain is routed to this adapter (the partner's users)."""
        ...


@dataclass
class InboundStats:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    busy: int = 0
    rejected_signature: int = 0
    malformed: int = 0
    oversized: int = 0
    refused: int = 0


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 parties: tuple[Address, Address] = (UNKNOWN, UNKNOWN),
                 record: bool = True, retry_after: int | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.parties = parties
        self.record = record
        self.retry_after = retry_after


_json = msgspec.json.Encoder()


class WebhookEndpoint:
    """The ASGI 3 app taking the partner's signed requests (rules in the module docstring)."""

    def __init__(self, intake: Intake, *, keys: tuple[bytes, ...], path: str,
                 dedupe: Deduplicator, wall_clock: Callable[[], float],
                 max_body_bytes: int, request_timeout: float, max_in_flight: int,
                 busy_retry_after: int) -> None:
        self._intake = intake
        self._keys = keys
        self.path = path
        self.dedupe = dedupe
        self._wall_clock = wall_clock
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.busy_retry_after = busy_retry_after
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self.stats = InboundStats()

    def statistics(self) -> InboundStats:
        return dataclasses.replace(self.stats)

    def _adapter_stats(self) -> AdapterStats:
        intake = self._intake
        return intake.engine.adapter_stats(intake.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        headers: list[tuple[bytes, bytes]] = []
        try:
            if path == "/healthz":
                if method not in ("GET", "HEAD"):
                    raise _Reject(405, "method-not-allowed", "use GET", record=False)
                status, answer = 200, {"status": "ok"}
            elif path != self.path:
                raise _Reject(404, "not-found", f"POST webhooks to {self.path}", record=False)
            elif method != "POST":
                raise _Reject(405, "method-not-allowed", "use POST", record=False)
            else:
                try:
                    self._limiter.acquire_nowait()
                except trio.WouldBlock:
                    self.stats.busy += 1
                    self._adapter_stats().count_inbound(UNKNOWN_TYPE, "busy")
                    raise _Reject(503, "busy", "too many requests in flight; retry later",
                                  record=False, retry_after=self.busy_retry_after) from None
                try:
                    status, answer = await self._post(scope, receive)
                finally:
                    self._limiter.release()
        except ClientGone:
            log.info("webhook request abandoned by the client")
            return
        except _Reject as reject:
            status, answer = reject.status, {"error": reject.code, "message": reject.message}
            if reject.retry_after is not None:
                headers.append((b"retry-after", str(reject.retry_after).encode()))
            if reject.record:
                sender, receiver = reject.parties
                await self._intake.engine.record_rejected(
                    sender=sender, receiver=receiver, reason=f"webhook:{reject.code}")
            log.info("webhook request refused", extra={"status": status,
                                                       "error": reject.code})
        await respond(send, status, _json.encode(answer), extra=headers)

    async def _post(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        headers = header_map(scope)
        body = await self._read_body(headers, receive)
        try:
            webhook_id = verify(self._keys, headers, body, now=self._wall_clock())
        except SignatureError as exc:
            self.stats.rejected_signature += 1
            raise _Reject(401, exc.code, exc.message) from None
        self.stats.received += 1
        while True:
            try:
                claim = self.dedupe.claim(webhook_id)
            except UnavailableError:
                self.stats.busy += 1
                self._adapter_stats().count_inbound(UNKNOWN_TYPE, "busy")
                raise _Reject(503, "busy", "too many webhooks in flight; retry later",
                              record=False, retry_after=self.busy_retry_after) from None
            if claim is Claim.DONE:
                self.stats.duplicates += 1
                self._adapter_stats().count_dedupe_hit()
                log.info("webhook replay answered as a duplicate",
                         extra={"webhook_id": webhook_id})
                return 200, {"status": "duplicate", "webhook_id": webhook_id}
            if claim is Claim.NEW:
                break
            await self.dedupe.wait_settled(webhook_id)
        accepted = False
        try:
            event = self._event(body, webhook_id)
            await self._offer(event)
            accepted = True
        finally:
            if accepted:
                self.dedupe.done(webhook_id)
            else:
                self.dedupe.release(webhook_id)
        self.stats.accepted += 1
        log.info("webhook accepted", extra={"webhook_id": webhook_id, "kind": event.log_type,
                                            "event_id": event.event_id})
        return 202, {"status": "accepted", "id": event.event_id, "webhook_id": webhook_id}

    def _event(self, body: bytes, webhook_id: str) -> Event:
        intake = self._intake
        port = intake.engine
        found: tuple[Address, Address] = (UNKNOWN, UNKNOWN)
        try:
            payload = decode_body(body)
            found = parties(payload)
            directory = port.directory
            ids = IdResolver(
                adapter_name=intake.name,
                from_partner_id=lambda ref: directory.find_canonical_id(intake.name, ref),
                is_canonical=lambda ref: directory.get_message_ids(ref) is not None)
            event = to_event(payload, adapter_name=intake.name, webhook_id=webhook_id,
                             now=port.clock.now(), ids=ids)
        except PayloadError as exc:
            self.stats.malformed += 1
            self._adapter_stats().count_inbound(UNKNOWN_TYPE, "malformed")
            raise _Reject(400, exc.code, exc.message, parties=found) from None
        if not intake.serves(event.source):
            self.stats.refused += 1
            port.adapter_stats(intake.name).count_inbound(event.log_type, "refused")
            raise _Reject(403, "sender-not-served",
                          f"this endpoint does not speak for {event.source.domain} - at "
                          "`$.data.from`", parties=found)
        reason = port.refusal(event)
        if reason is not None:
            self.stats.refused += 1
            status = 404 if reason.startswith(_NOT_FOUND_PREFIXES) else 403
            raise _Reject(status, reason, _REFUSAL_TEXT.get(status, ""), parties=found)
        return event

    async def _offer(self, event: Event) -> None:
        engine = self._intake.engine
        try:
            await engine.offer(event)
            # The ledger's record is durable before the partner hears 202: a crash
            # after the answer is resolved at restart, never lost silently.
            await engine.directory.flush()
        except UnavailableError as exc:  # MailboxFullError too: nothing routed
            self.stats.busy += 1
            log.warning("webhook not taken: engine busy", extra={
                "event_id": event.event_id, "error": type(exc).__name__})
            raise _Reject(503, "busy", "the conversation is busy; retry later", record=False,
                          retry_after=self.busy_retry_after) from None

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        try:
            return await read_body(receive, headers, limit=self.max_body_bytes,
                                   deadline=trio.current_time() + self.request_timeout)
        except BodyTooLarge:
            self.stats.oversized += 1
            self._adapter_stats().count_inbound(UNKNOWN_TYPE, "malformed")
            raise _Reject(413, "request-too-large",
                          f"the body exceeds {self.max_body_bytes} bytes") from None
        except BodyTimeout:
            raise _Reject(408, "request-timeout", "the body did not arrive in time",
                          record=False) from None


_REFUSAL_TEXT = {
    404: "no such user here, or no platform serves that domain",
    403: "federation policy does not allow this (domain agreement, user policy, or "
         "not a contact yet)",
}
