"""Slack's inbound side over HTTP: the Events API endpoint, slash commands, de-duplication.

Slack POSTs signed requests to the app's Request URL (``docs/slack-sandbox.md``,
``reference/slack.md``). :class:`SlackEventsApp` is the ASGI 3 app that takes
them; :func:`engine.asgi.serve_http` serves it with hypercorn on trio. What happens to a
request, in order (the first rule that applies decides)::

    route other than POST /slack/events, /slack/commands, GET /healthz   404 / 405
    Content-Length above max_body_bytes, or the body grows past it       413
    signature missing, forged, or timestamp outside 5 minutes           401  nothing parsed
    not JSON                                                             400  invalid_json
    JSON that is not an object with a string "type"                      400  invalid_body
    a field the adapter reads has the wrong type (``_views.py``)         400  invalid_event,
                                                                              invalid_challenge
    form-encoded without "command" (and not an interactive "payload")    400
    url_verification                                                     200  {"challenge": ...}
    url_verification without a string challenge                         400
    event_callback without a string event_id                             400
    event_callback whose event_id is already done                        200  handler not called
    event_callback whose event_id is in flight elsewhere                 wait for that outcome
    handler.on_event returned                                            200  done
    handler.on_event raised UnavailableError / ack budget ran out        503  claim released
    handler.on_event raised anything else (a poison event)               200  done, counted
    app_rate_limited                                                     on_event, no dedupe
    any other body type                                                  200  counted, ignored
    form with "command"                                                  200  on_command's JSON
    form with "payload" (interactivity: not handled yet)                 200  counted, ignored

Bodies are decoded once, from bytes, into the views of :mod:`._views`
(:func:`._views.read_events_body`); the handler gets an :class:`EventsBody`. A
refused body is counted (``malformed``) and logged with the path of the bad
field, never its value. The ack budget runs from the moment the request
arrives, so Slack (which waits 3 s) always hears back in time. De-duplication
is by ``event_id`` in an :class:`engine.Deduplicator`, which the Socket Mode
client shares (``_socket_mode.py``): both transports go through
:func:`dispatch_event` and :func:`dispatch_command`, so they behave alike.

Measurements: given the adapter's :class:`engine.AdapterStats`
(``adapter_stats``), both transports count a de-duplication hit for every
delivery of an event already done, and malformed input (a refused body, a
request too large) as ``type="unknown", outcome="malformed"``; what the
engine makes of the events the handler offers, it counts itself.

Logs carry event ids, body and event types, team ids, statuses and exception
type names, never tokens, secrets, message text or handler error messages.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol
from urllib.parse import parse_qsl

import msgspec
import trio
from slack_sdk.signature import Clock as SignatureClock
from slack_sdk.signature import SignatureVerifier

from engine import UNKNOWN_TYPE, AdapterStats, Claim, Deduplicator, UnavailableError
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

from ._views import EventsBody, Malformed, read_events_body

log = logging.getLogger("interlink.slack.inbound")

MIB = 1024 * 1024
#: event bodies Slack sends that the handler takes (everything else is counted and ignored)
HANDLED_BODY_TYPES = frozenset({"event_callback", "app_rate_limited"})
#: the most form fields a slash command request may carry
MAX_FORM_FIELDS = 200



class InboundHandler(Protocol):
    """What the Slack adapter's logic offers its transports (HTTP and Socket Mode)."""

    async def on_event(self, body: EventsBody) -> None:
        """A verified, de-duplicated Events API body (type event_callback, app_rate_limited).

        Returning means the event is taken: ack it. Raising engine.UnavailableError means
        do not ack (Slack will redeliver). Any other exception: log type only, ack
        (a poison event must not be redelivered forever) and count it. The call runs
        under the ack budget and is cancelled when it runs out: it must be cancel-safe.
        """

    async def on_command(self, form: Mapping[str, str]) -> dict[str, Any]:
        """A slash command (fields as Slack sends them: command, text, user_id, team_id,
        channel_id, response_url, ...). Returns the response body, e.g.
        {"response_type": "ephemeral", "text": "..."}."""


# -- what both transports do with a body ----------------------------------------------------


@dataclass
class InboundStats:
    """Counters of one inbound transport (requests over HTTP, envelopes over Socket Mode)."""

    #: requests (envelopes) that passed signature verification
    received: int = 0
    #: events handled (on_event returned)
    taken: int = 0
    #: deliveries of an event already done, answered without calling the handler
    duplicates: int = 0
    #: events not acked (UnavailableError or the ack budget ran out): Slack redelivers
    unavailable: int = 0
    rejected_signature: int = 0
    malformed: int = 0
    oversized: int = 0
    #: body (or envelope) types that are not handled
    unknown: int = 0
    #: interactive payloads (buttons, shortcuts, modals): acked and ignored for now
    interactive: int = 0
    commands: int = 0
    #: the handler raised something other than UnavailableError (acked anyway)
    handler_errors: int = 0


class EventOutcome(Enum):
    TAKEN = "taken"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    IGNORED = "ignored"
    MALFORMED = "malformed"
    UNAVAILABLE = "unavailable"

    @property
    def ack(self) -> bool:
        """Whether Slack should hear that the event was received (no redelivery)."""
        return self is not EventOutcome.UNAVAILABLE


async def dispatch_event(body: EventsBody, *, handler: InboundHandler,
                         dedupe: Deduplicator, stats: InboundStats, deadline: float,
                         limiter: trio.CapacityLimiter | None = None,
                         adapter_stats: AdapterStats | None = None) -> EventOutcome:
    """Give an Events API body to ``handler`` at most once per ``event_id``, by ``deadline``.

    ``deadline`` is on trio's clock. The caller acks when the outcome's ``ack`` is true.
    ``adapter_stats`` counts de-duplication hits and malformed bodies.
    """
    body_type = body.type
    if body_type not in HANDLED_BODY_TYPES:
        stats.unknown += 1
        log.info("slack body type ignored", extra=_fields(body))
        return EventOutcome.IGNORED
    if body_type == "event_callback" and not body.event_id:
        stats.malformed += 1
        if adapter_stats is not None:
            adapter_stats.count_inbound(UNKNOWN_TYPE, "malformed")
        log.info("slack event_callback without event_id", extra=_fields(body))
        return EventOutcome.MALFORMED
    key = body.event_id if body_type == "event_callback" else None
    with trio.move_on_at(deadline):
        if key is not None:
            while (claim := dedupe.claim(key)) is not Claim.NEW:
                if claim is Claim.DONE:
                    stats.duplicates += 1
                    if adapter_stats is not None:
                        adapter_stats.count_dedupe_hit()
                    log.debug("slack event duplicate", extra=_fields(body))
                    return EventOutcome.DUPLICATE
                # another delivery is handling it: its outcome decides ours
                await dedupe.wait_settled(key)
        try:
            if limiter is None:
                await handler.on_event(body)
            else:
                async with limiter:
                    await handler.on_event(body)
        except Exception as exc:
            if _unavailable(exc):
                if key is not None:
                    dedupe.release(key)
                stats.unavailable += 1
                log.warning("slack event not taken: handler unavailable",
                            extra={**_fields(body), "error": type(exc).__name__})
                return EventOutcome.UNAVAILABLE
            if key is not None:
                dedupe.done(key)
            stats.handler_errors += 1
            log.error("slack event handler failed; acked so it is not redelivered",
                      extra={**_fields(body), "error": type(exc).__name__})
            return EventOutcome.FAILED
        except BaseException:  # cancelled (the ack budget, a shutdown): not taken
            if key is not None:
                dedupe.release(key)
            raise
        if key is not None:
            dedupe.done(key)
        stats.taken += 1
        log.debug("slack event taken", extra=_fields(body))
        return EventOutcome.TAKEN
    stats.unavailable += 1
    log.warning("slack event not taken within the ack budget", extra=_fields(body))
    return EventOutcome.UNAVAILABLE


async def dispatch_command(form: Mapping[str, str], *, handler: InboundHandler,
                           stats: InboundStats, deadline: float) -> dict[str, Any]:
    """Run a slash command; its answer, or an ephemeral message saying why there is none.

    Slack does not retry commands, so every failure becomes words for the person.
    """
    stats.commands += 1
    command = form.get("command", "")
    extra = {"command": command[:64], "team_id": form.get("team_id", "")}
    with trio.move_on_at(deadline):
        try:
            answer = await handler.on_command(form)
        except Exception as exc:
            if _unavailable(exc):
                log.warning("slash command unavailable",
                            extra={**extra, "error": type(exc).__name__})
                return _ephemeral(f"Interlink cannot answer {command} right now. "
                                  "Please try again in a minute.")
            stats.handler_errors += 1
            log.error("slash command handler failed", extra={**extra,
                                                             "error": type(exc).__name__})
            return _ephemeral(f"Interlink failed to run {command}. "
                              "The operator can find the error in the logs.")
        log.debug("slash command answered", extra=extra)
        return answer
    log.warning("slash command not answered within the ack budget", extra=extra)
    return _ephemeral(f"Interlink took too long to answer {command}. Please try again.")


def _unavailable(exc: Exception) -> bool:
    """UnavailableError, or a group (from a nursery in the handler) of nothing else."""
    if isinstance(exc, ExceptionGroup):
        return exc.split(UnavailableError)[1] is None
    return isinstance(exc, UnavailableError)


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def _fields(body: EventsBody) -> dict[str, Any]:
    """What may be logged about an Events API body: ids and types only."""
    fields = {"event_id": body.event_id, "body_type": body.type,
              "event_type": body.event.type if body.event is not None else None,
              "team_id": body.team_id}
    return {k: v[:64] if v else None for k, v in fields.items()}


def log_malformed(refused: Malformed, **extra: Any) -> None:
    """Log a refused payload: its error code and the path of the bad field, no value."""
    log.info("slack payload refused", extra={**extra, "error": refused.code,
                                             "where": refused.where})


# -- the HTTP app ---------------------------------------------------------------------------


class _WallClock(SignatureClock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class _Reject(Exception):
    def __init__(self, status: int, code: str, where: str | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        #: the path of the bad field of a refused body
        self.where = where


_EVENT_ROUTES = frozenset({"/slack/events", "/slack/commands"})
_json = msgspec.json.Encoder()


class SlackEventsApp:
    """The ASGI 3 app behind Slack's Request URL: events and slash commands.

    ``clock`` gives wall-clock seconds for the signature window (default
    ``time.time``); the ack budget is measured on trio's clock from the
    request's arrival. ``max_in_flight`` bounds concurrent handler calls.
    ``adapter_stats``: the adapter's measurements (see the module docstring).
    """

    def __init__(self, *, signing_secret: str, handler: InboundHandler,
                 dedupe: Deduplicator, clock: Callable[[], float] | None = None,
                 max_body_bytes: int = MIB, ack_budget: float = 2.5,
                 max_in_flight: int = 256, adapter_stats: AdapterStats | None = None) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if not 0 < ack_budget < 3:
            raise ValueError("ack_budget must be below Slack's 3 s deadline")
        self._verifier = SignatureVerifier(signing_secret, clock=_WallClock(clock or time.time))
        self.handler = handler
        self.dedupe = dedupe
        self.max_body_bytes = max_body_bytes
        self.ack_budget = ack_budget
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self.stats = InboundStats()
        #: the adapter's measurements (its own when none are given: read by nobody)
        self.adapter_stats = adapter_stats or AdapterStats("")

    def statistics(self) -> InboundStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self.stats)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        deadline = trio.current_time() + self.ack_budget
        path, method = scope.get("path", ""), scope.get("method", "")
        try:
            if path == "/healthz":
                if method not in ("GET", "HEAD"):
                    raise _Reject(405, "method_not_allowed")
                await respond(send, 200, _json.encode({"status": "ok"}))
                return
            if path not in _EVENT_ROUTES:
                raise _Reject(404, "not_found")
            if method != "POST":
                raise _Reject(405, "method_not_allowed")
            status, answer = await self._post(scope, receive, deadline)
        except ClientGone:
            log.info("slack request abandoned by the client", extra={"path": path[:64]})
            return
        except _Reject as reject:
            status, answer = reject.status, {"ok": False, "error": reject.code}
            if status == 413:
                self.stats.oversized += 1
                self.adapter_stats.count_inbound(UNKNOWN_TYPE, "malformed")
            elif status == 401:
                self.stats.rejected_signature += 1
            elif status == 400:
                self.stats.malformed += 1
                self.adapter_stats.count_inbound(UNKNOWN_TYPE, "malformed")
            log.info("slack request refused", extra={"path": path[:64], "status": status,
                                                     "error": reject.code,
                                                     "where": reject.where})
        await respond(send, status, b"" if answer is None else _json.encode(answer))

    async def _post(self, scope: Scope, receive: Receive, deadline: float
                    ) -> tuple[int, dict[str, Any] | None]:
        headers = header_map(scope)
        body = await self._read_body(headers, receive, deadline)
        try:
            valid = self._verifier.is_valid_request(body, headers)
        except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
            valid = False
        if not valid:
            raise _Reject(401, "invalid_signature")
        self.stats.received += 1
        if headers.get("content-type", "").lower().startswith(
                "application/x-www-form-urlencoded"):
            return await self._form(body, deadline)
        decoded = read_events_body(body)
        if isinstance(decoded, Malformed):
            raise _Reject(400, decoded.code, decoded.where)
        if decoded.type == "url_verification":
            if decoded.challenge is None:
                raise _Reject(400, "invalid_challenge", "$.challenge")
            log.info("slack url_verification answered")
            return 200, {"challenge": decoded.challenge}
        outcome = await dispatch_event(decoded, handler=self.handler, dedupe=self.dedupe,
                                       stats=self.stats, deadline=deadline,
                                       limiter=self._limiter, adapter_stats=self.adapter_stats)
        if outcome is EventOutcome.MALFORMED:  # counted by dispatch_event
            return 400, {"ok": False, "error": "invalid_event"}
        if not outcome.ack:
            return 503, {"ok": False, "error": "unavailable"}
        return 200, None

    async def _form(self, body: bytes, deadline: float) -> tuple[int, dict[str, Any] | None]:
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                  max_num_fields=MAX_FORM_FIELDS))
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400, "invalid_form_data") from None
        if form.get("command"):
            return 200, await dispatch_command(form, handler=self.handler, stats=self.stats,
                                               deadline=deadline)
        if "payload" in form:  # interactivity (buttons, shortcuts): not handled yet
            self.stats.interactive += 1
            log.info("slack interactive payload ignored")
            return 200, None
        if form.get("ssl_check") == "1":
            return 200, None
        raise _Reject(400, "invalid_command")

    async def _read_body(self, headers: dict[str, str], receive: Receive,
                         deadline: float) -> bytes:
        """The body, at most ``max_body_bytes`` (413 past it), by the ack deadline (408)."""
        try:
            return await read_body(receive, headers, limit=self.max_body_bytes,
                                   deadline=deadline)
        except BodyTooLarge:
            raise _Reject(413, "request_too_large") from None
        except BodyTimeout:
            raise _Reject(408, "request_timeout") from None


