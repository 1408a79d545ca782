"""The control API: what operators (and ``interlink sessions …``) talk to.

HTTP + JSON on loopback, served by hypercorn on trio. Every request needs
``Authorization: Bearer <token>``; anything else gets ``401`` and a body that
says only that. Routes:

    GET  /healthz                      liveness
    GET  /readyz                       200 once the engine accepts events, else 503
    GET  /metrics                      Prometheus text format
    GET  /v1/tree                      the live supervision tree
    GET  /v1/sessions?state=&domain=&user=&after=&limit=
    GET  /v1/sessions/{id}
    POST /v1/sessions/{id}/restart | stop | start
    POST /v1/sessions/restart-failed
    GET  /v1/contacts?state=&after=&limit=
    GET  /v1/contacts/{address}
    POST /v1/contacts/{address}/restart | stop | start
    POST /v1/say                       {"source", "destination", "text", "wait"}: a message
                                       from a user of a loopback platform or of the embedded
                                       Slack sandbox (demos and checks), answered with its
                                       outcome: 200 delivered, 202 accepted (no outcome within
                                       "wait" seconds, default 5), 409 refused, 502 failed

Errors are JSON ``{"error": code, "detail": text}`` with a fitting status.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote

import msgspec
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from engine import (
    CONTACT_KIND,
    SESSION_KIND,
    ActivationStats,
    ActorState,
    Address,
    Engine,
    InvalidAddressError,
    LatencyHistogram,
    MailboxFullError,
    Message,
    MetadataEntry,
    SessionRecord,
    new_event_id,
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
from engine.testing import LoopbackAdapter

log = logging.getLogger("interlink.control")

MAX_BODY = 64 * 1024
#: seconds a request's body may take to arrive
BODY_TIMEOUT = 10.0
MAX_PAGE = 500
#: directory records a single list request may read while filtering
SCAN_BUDGET = 20_000

_LIVE_STATES: dict[str, ActorState] = {"running": "running", "failed": "failed"}

TreeSource = Callable[[], dict[str, Any]]


class _HttpError(Exception):
    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes


def _wall_time(engine: Engine, trio_time: float | None) -> float | None:
    """Convert a time on trio's clock to wall-clock seconds (for people)."""
    if trio_time is None:
        return None
    return round(engine.clock.now() - (trio.current_time() - trio_time), 3)


def _actor_json(engine: Engine, stats: ActivationStats | None) -> dict[str, Any]:
    if stats is None:
        return {"state": "passive", "mailbox_depth": 0, "restarts": 0, "last_error": "",
                "last_error_at": None, "last_activity": None}
    return {"state": stats.state, "mailbox_depth": stats.mailbox_depth,
            "restarts": stats.crashes, "handled": stats.handled,
            "last_error": stats.last_error,
            "last_error_at": _wall_time(engine, stats.last_error_at),
            "last_activity": _wall_time(engine, stats.last_activity)}


def _session_json(engine: Engine, record: SessionRecord) -> dict[str, Any]:
    stats = engine.actors.stats(f"{SESSION_KIND}/{record.session_id}")
    return {"id": record.session_id, "a": str(record.a), "b": str(record.b),
            "created_at": record.created_at, "conversation_ids": record.conversation_ids,
            **_actor_json(engine, stats)}


class ControlApp:
    """The ASGI application; every edge (engine, tree, token) is given to it."""

    def __init__(self, engine: Engine, token: str, tree: TreeSource,
                 sayers: Mapping[str, Sayer] | None = None) -> None:
        """``sayers``: per platform name, how to post as one of its users (demo sandboxes);
        loopback platforms need none."""
        if not token:
            raise ValueError("the control API needs a token")
        self._engine = engine
        self._sayers = dict(sayers or {})
        self._token = token.encode()
        self._tree = tree
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(engine))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            if not self._authorised(scope):
                raise _HttpError(401, "unauthorized", "a valid bearer token is required")
            request = _Request(scope["method"], scope["path"], _query(scope),
                               await _read_body(scope, receive))
            status, payload = await self._dispatch(request)
        except ClientGone:
            return  # hung up before its body arrived: nobody to answer
        except _HttpError as exc:
            status, payload = exc.status, {"error": exc.code, "detail": exc.detail}
        extra = [(b"www-authenticate", b'Bearer realm="interlink"')] if status == 401 else []
        if isinstance(payload, bytes):
            await respond(send, status, payload, extra=extra,
                          content_type=b"text/plain; version=0.0.4; charset=utf-8")
        else:
            await respond(send, status, msgspec.json.encode(payload), extra=extra)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self._token)
        return False

    async def _dispatch(self, request: _Request) -> tuple[int, Any]:
        engine = self._engine
        parts = [unquote(p) for p in request.path.strip("/").split("/") if p]
        method = request.method
        if method == "GET" and parts == ["healthz"]:
            return 200, {"status": "ok"}
        if method == "GET" and parts == ["readyz"]:
            ready = engine.accepting
            return (200 if ready else 503), {"ready": ready}
        if method == "GET" and parts == ["metrics"]:
            return 200, generate_latest(self.registry)
        if parts[:1] != ["v1"]:
            raise _HttpError(404, "not_found", f"no route {request.path}")
        parts = parts[1:]
        if method == "GET" and parts == ["tree"]:
            return 200, self._tree()
        if parts[:1] == ["sessions"]:
            return self._sessions(method, parts[1:], request)
        if parts[:1] == ["contacts"]:
            return self._contacts(method, parts[1:], request)
        if method == "POST" and parts == ["say"]:
            return await self._say(request.body)
        raise _HttpError(404, "not_found", f"no route {method} {request.path}")

    # -- sessions -------------------------------------------------------------
    def _sessions(self, method: str, parts: list[str], request: _Request) -> tuple[int, Any]:
        engine = self._engine
        if method == "GET" and not parts:
            return 200, self._list_sessions(request.query)
        if method == "POST" and parts == ["restart-failed"]:
            failed = engine.actors.list_active(kind=SESSION_KIND, state="failed")
            for stats in failed:
                engine.actors.restart(stats.actor_id)
            return 200, {"restarted": [s.actor_id.partition("/")[2] for s in failed]}
        record = engine.directory.get_session(parts[0]) if parts else None
        if record is None:
            raise _HttpError(404, "not_found", f"no session {parts[0] if parts else ''}")
        actor_id = f"{SESSION_KIND}/{record.session_id}"
        if method == "GET" and len(parts) == 1:
            return 200, _session_json(engine, record)
        if method == "POST" and len(parts) == 2:
            self._operate(actor_id, parts[1])
            return 200, _session_json(engine, record)
        raise _HttpError(405, "method_not_allowed", f"{method} {request.path}")

    def _list_sessions(self, query: Mapping[str, str]) -> dict[str, Any]:
        engine = self._engine
        state = query.get("state") or None
        if state not in (None, "running", "failed", "passive"):
            raise _HttpError(400, "bad_request", "state must be running, failed or passive")
        domain = (query.get("domain") or "").lower() or None
        user = _optional_address(query.get("user"))
        limit = _limit(query)
        after = query.get("after", "")

        def wanted(record: SessionRecord) -> bool:
            if domain is not None and domain not in (record.a.domain, record.b.domain):
                return False
            return user is None or user in (record.a, record.b)

        items: list[dict[str, Any]] = []
        next_cursor: str | None = None
        live_state = _LIVE_STATES.get(state or "")
        if live_state is not None:
            for stats in engine.actors.list_active(kind=SESSION_KIND, state=live_state):
                session_id = stats.actor_id.partition("/")[2]
                record = engine.directory.get_session(session_id)
                if session_id <= after or record is None or not wanted(record):
                    continue
                if len(items) == limit:
                    next_cursor = items[-1]["id"]
                    break
                items.append(_session_json(engine, record))
        else:
            cursor, scanned = after, 0
            while len(items) < limit and scanned < SCAN_BUDGET:
                page = engine.directory.list_sessions(after=cursor, limit=min(1000, SCAN_BUDGET))
                if not page:
                    cursor = ""
                    break
                for record in page:
                    scanned += 1
                    cursor = record.session_id
                    if not wanted(record):
                        continue
                    item = _session_json(engine, record)
                    if state is None or item["state"] == state:
                        items.append(item)
                        if len(items) == limit:
                            break
            next_cursor = cursor or None
        return {"sessions": items, "next": next_cursor}

    # -- contacts -------------------------------------------------------------
    def _contacts(self, method: str, parts: list[str], request: _Request) -> tuple[int, Any]:
        engine = self._engine
        if method == "GET" and not parts:
            wanted = request.query.get("state") or None
            state = _LIVE_STATES.get(wanted or "")
            if wanted is not None and state is None:
                raise _HttpError(400, "bad_request", "state must be running or failed")
            after, limit = request.query.get("after", ""), _limit(request.query)
            active = [s for s in engine.actors.list_active(kind=CONTACT_KIND, state=state)
                      if s.actor_id.partition("/")[2] > after]
            page = active[:limit]
            return 200, {
                "contacts": [{"address": s.actor_id.partition("/")[2], **_actor_json(engine, s)}
                             for s in page],
                "next": page[-1].actor_id.partition("/")[2] if len(active) > limit else None}
        if not parts:
            raise _HttpError(405, "method_not_allowed", f"{method} {request.path}")
        address = _optional_address(parts[0])
        actor_id = f"{CONTACT_KIND}/{address}"
        if method == "GET" and len(parts) == 1:
            return 200, {"address": str(address),
                         **_actor_json(engine, engine.actors.stats(actor_id))}
        if method == "POST" and len(parts) == 2:
            self._operate(actor_id, parts[1])
            return 200, {"address": str(address),
                         **_actor_json(engine, engine.actors.stats(actor_id))}
        raise _HttpError(405, "method_not_allowed", f"{method} {request.path}")

    def _operate(self, actor_id: str, operation: str) -> None:
        actors = self._engine.actors
        if operation == "restart":
            actors.restart(actor_id)
        elif operation == "stop":
            actors.stop(actor_id)
        elif operation == "start":
            actors.start(actor_id)
        else:
            raise _HttpError(404, "not_found", f"no operation {operation!r}: "
                                               "use restart, stop or start")
        log.info("operator action", extra={"actor_id": actor_id, "operation": operation})

    # -- say -------------------------------------------------------------------------
    async def _say(self, body: bytes) -> tuple[int, Any]:
        """Say ``text`` as ``source`` and report what became of it.

        The engine's own rules are asked first (:meth:`Engine.refusal`): a message they
        refuse is not sent and the answer names the reason. Otherwise it is sent as its
        platform would send it, and the answer waits up to ``wait`` seconds for its
        outcome in the metadata log: delivered, refused or failed (with the reason);
        still in flight then, it is reported as accepted.
        """
        try:
            request = msgspec.json.decode(body, type=_SayRequest)
            source = Address.parse(request.source)
            destination = Address.parse(request.destination)
        except (msgspec.ValidationError, msgspec.DecodeError, InvalidAddressError) as exc:
            raise _HttpError(400, "bad_request", str(exc)) from None
        engine = self._engine
        adapter = engine.router.adapter_for(source.domain)
        if not engine.accepting:
            raise _HttpError(503, "not_ready", "the engine is not accepting events")
        sayer = self._sayers.get(adapter.name) if adapter is not None else None
        if adapter is None or (sayer is None and not isinstance(adapter, LoopbackAdapter)):
            raise _HttpError(409, "not_loopback",
                             f"{source.domain} is not served by a loopback platform or a local "
                             "sandbox; say as a user of one of those")
        since = engine.clock.now()
        event = Message.create(source=source, destination=destination, body=request.text,
                               timestamp=since,
                               platform_ids={adapter.name: f"say-{new_event_id()}"})
        reason = engine.refusal(event)
        if reason is not None:
            return _said("refused", reason)
        if sayer is not None:
            try:
                posted = await sayer(source, destination, request.text)
            except SayError as exc:
                raise _HttpError(409, "cannot_say", str(exc)) from None

            def matches(entry: MetadataEntry) -> bool:
                # the platform names the event: the first outcome for this pair is its
                return entry.sender == source and entry.receiver == destination \
                    and entry.type in ("im", "error")
        else:
            try:
                await engine.offer(event)
            except MailboxFullError:
                raise _HttpError(503, "busy", "the conversation's mailbox is full; "
                                              "say it again later") from None
            posted = {"event_id": event.event_id}

            def matches(entry: MetadataEntry) -> bool:
                return entry.event_id == event.event_id
        entry = await self._outcome(matches, since, request.wait)
        if entry is None:
            return 202, {"status": "accepted", **posted}
        return _said(entry.outcome, entry.reason, **posted)

    async def _outcome(self, matches: Callable[[MetadataEntry], bool], since: float,
                       wait: float) -> MetadataEntry | None:
        """The first metadata entry from ``since`` on that ``matches``, looked for every
        :data:`OUTCOME_POLL` seconds during ``wait`` seconds; ``None`` if none came."""
        metadata_log = self._engine.metadata_log
        with trio.move_on_after(wait):
            while True:
                page = metadata_log.entries(since=since, limit=OUTCOME_PAGE)
                found = next((entry for entry in page if matches(entry)), None)
                if found is not None:
                    return found
                if len(page) == OUTCOME_PAGE and page[-1].timestamp > since:
                    since = page[-1].timestamp  # a busy engine: read on
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(OUTCOME_POLL)
        return None


#: how often ``/v1/say`` looks for its message's outcome, and how many entries at a time
OUTCOME_POLL = 0.05
OUTCOME_PAGE = 1000
#: the longest a ``/v1/say`` request may wait for its outcome (the client's timeout is longer)
MAX_SAY_WAIT = 60.0

#: what the reasons a message is refused or fails for mean, for the person saying it
SAY_REASONS = {
    "not-a-contact": "the sender and the recipient are not accepted contacts; one asks, "
                     "the other accepts (e.g. /interlink add on Slack)",
    "unknown-address": "the recipient's domain has no such user",
    "unknown-user": "the recipient's platform has no such user",
    "no-route": "no platform serves the recipient's domain",
    "platform-unavailable": "the platform serving the recipient's domain is not running",
    "no-agreement": "no federation agreement between the two domains",
    "agreement-denies": "the agreement between the two domains denies federation",
    "user-denied": "federation is denied for this user",
    "not-opted-in": "a user has not opted in to federation",
    "actor-failed": "the conversation has failed or was stopped (see `interlink sessions "
                    "list --state failed`, then `interlink sessions restart`)",
    "internal-error": "delivering it crashed (see `interlink sessions list --state failed`)",
    "not-in-session": "the message does not belong to its conversation",
}


def explain_reason(reason: str) -> str:
    """``reason`` (a code such as ``not-a-contact``) in words; the code itself when it
    has none."""
    return SAY_REASONS.get(reason) or SAY_REASONS.get(reason.partition(":")[0]) or reason


def _said(outcome: str, reason: str, **posted: Any) -> tuple[int, Any]:
    """The answer to a say: 200 delivered, 409 refused, 502 failed (with the reason)."""
    if outcome == "delivered":
        return 200, {"status": "delivered", **posted}
    status, error = (409, "refused") if outcome == "refused" else (502, "not_delivered")
    return status, {"error": error, "detail": explain_reason(reason), "status": outcome,
                    "reason": reason, **posted}


class SayError(Exception):
    """A sayer cannot post as that user; the message says why (no content)."""


#: posts ``text`` as ``source`` to ``destination`` on its platform; returns what to report
Sayer = Callable[[Address, Address, str], Awaitable[dict[str, Any]]]


class _SayRequest(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    destination: str
    text: str
    #: seconds to wait for the outcome (0: answer once the message is accepted)
    wait: Annotated[float, msgspec.Meta(ge=0, le=MAX_SAY_WAIT)] = 5.0


def _query(scope: Scope) -> dict[str, str]:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in raw.items()}


def _limit(query: Mapping[str, str]) -> int:
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise _HttpError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise _HttpError(400, "bad_request", f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _optional_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        return Address.parse(text)
    except InvalidAddressError as exc:
        raise _HttpError(400, "bad_request", str(exc)) from None


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    try:
        return await read_body(receive, header_map(scope), limit=MAX_BODY,
                               deadline=trio.current_time() + BODY_TIMEOUT)
    except BodyTooLarge:
        raise _HttpError(413, "payload_too_large",
                         f"bodies are limited to {MAX_BODY} bytes") from None
    except BodyTimeout:
        raise _HttpError(408, "request_timeout", "the body did not arrive in time") from None


class EngineCollector(Collector):
    """Reads the engine's counters at scrape time (nothing on the hot path)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Any:
        engine = self._engine
        actors = engine.actors
        depth = GaugeMetricFamily("interlink_mailbox_depth",
                                  "Messages waiting in actor mailboxes", labels=["kind"])
        live = GaugeMetricFamily("interlink_actors", "Live actor activations",
                                 labels=["kind", "state"])
        restarts = CounterMetricFamily("interlink_actor_restarts",
                                       "Actor crashes followed by a restart", labels=["kind"])
        runners = GaugeMetricFamily(
            "interlink_shard_runners",
            "Runner tasks of the shards (parked, running, or held by a waiting handler)",
            labels=["kind"])
        handoffs = CounterMetricFamily(
            "interlink_shard_runner_handoffs",
            "Runners started because every runner of a shard was held by a waiting handler",
            labels=["kind"])
        ledger_open = GaugeMetricFamily(
            "interlink_ledger_open",
            "Accepted inbound events not yet delivered or failed to their sender")
        ledger_open.add_metric([], len(engine.router.ledgered) + len(engine.router.interrupted))
        ledger_resolved = CounterMetricFamily(
            "interlink_ledger_resolved_at_start",
            "Events a crash had interrupted, failed to their senders after the restart grace")
        ledger_resolved.add_metric([], engine.ledger_resolved_at_start)
        duplicates = CounterMetricFamily(
            "interlink_duplicates",
            "Platform redeliveries of events taken before, answered as taken, not routed again")
        duplicates.add_metric([], engine.router.duplicates)
        yield ledger_open
        yield ledger_resolved
        yield duplicates
        for kind in actors.kinds:
            snapshots = actors.list_active(kind=kind)
            depth.add_metric([kind], sum(s.mailbox_depth for s in snapshots))
            for state in ("running", "failed"):
                live.add_metric([kind, state], sum(1 for s in snapshots if s.state == state))
            restarts.add_metric([kind], actors.crash_counts.get(kind, 0))
            dispatch = actors.runner_stats(kind)
            runners.add_metric([kind], dispatch.runners)
            handoffs.add_metric([kind], dispatch.handoffs)
        yield depth
        yield live
        yield restarts
        yield runners
        yield handoffs
        events = CounterMetricFamily("interlink_events", "Events handled, by type and outcome",
                                     labels=["type", "outcome"])
        for (event_type, outcome), count in sorted(engine.metadata_log.counts.items()):
            events.add_metric([event_type, outcome], count)
        yield events
        yield GaugeMetricFamily("interlink_sessions_registered", "Sessions in the directory",
                                value=engine.directory.count_sessions())
        yield _histogram("interlink_route_latency_seconds",
                         "Time from an inbound event to its session mailbox",
                         engine.router.route_latency)
        yield _histogram("interlink_session_handle_seconds",
                         "Time a session spends on one event, delivery included",
                         engine.router.handle_latency)


def _histogram(name: str, documentation: str, histogram: LatencyHistogram) -> Any:
    family = HistogramMetricFamily(name, documentation)
    buckets = [(bound, float(count)) for bound, count in histogram.cumulative()]
    family.add_metric([], buckets, sum_value=histogram.total if math.isfinite(histogram.total)
                      else 0.0)
    return family
