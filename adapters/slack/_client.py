"""The Slack Web API client: every outbound call the Slack adapter makes.

Pacing lives in :mod:`._pacing`, errors in :mod:`._errors`, uploads and
downloads in :mod:`._files` (mixed into :class:`SlackWebClient`).

One call goes::

    SlackWebClient.call(method, token=, team_id=, args=)
      -> its lane (FIFO per key) -> pacing (local token buckets, 429 penalties)
      -> POST base_url + method (JSON for chat.*, a form otherwise, as slack-sdk does)
      -> ok: the JSON answer, decoded once into the view asked for (``into=``,
         a :class:`._views.Answer`), or a dict when none is asked for
         429 / "ratelimited": penalise the key for Retry-After, take a turn again
         transient failure: back off (exponential, jittered) and try again
         anything else: SlackApiError

The rules, in the order they apply:

1. *Keys.* A call's key is ``(team, method)``; for ``chat.postMessage`` it is
   ``(team, method, channel)``. Waiting is per key: there is no global lock, so a
   caller on another key never waits for this one.
2. *Lanes.* Callers on one key take their turns in arrival order (a fair
   ``trio.Lock`` that exists only while someone uses it). ``chat.postMessage``
   keeps its lane for the whole call, retries included, so posts into one channel
   leave — and arrive — in the order they were made. Other methods hold their lane
   only while waiting for a turn.
3. *Budgets.* Before each attempt a call takes one token from each of its
   buckets, all at once, when all have one: ``(team, method)`` sized by the
   method's tier (``chat.postMessage``: the workspace-wide budget), plus, for
   ``chat.postMessage``, ``(team, method, channel)`` at 1 per second with a burst
   of 3. Budgets start at Slack's published limits or a little under, so a 429 is
   rare.
4. *Adaptation.* The two ``chat.postMessage`` budgets adapt (``_pacing`` rule 5):
   after ``pacing_raise_after`` seconds of callers waiting on one with no 429, its
   rate grows by ``pacing_raise_by``, up to ``post_message_max_per_second`` (a
   channel) or ``post_message_workspace_max_per_minute`` (the workspace). So a
   conservative start never caps Interlink below what the workspace allows.
5. *429.* ``Retry-After`` penalises the call's key only (the channel for
   ``chat.postMessage``, the workspace and method otherwise), and empties that
   key's bucket (so the pace after the penalty is ours, not a new burst). A
   ``chat.postMessage`` 429 also cuts the channel's rate by ``pacing_back_off_by``,
   and the workspace's rate too while it is above its start (once per
   Retry-After: a burst of 429s over many channels is one cut). The call waits
   out the penalty in its lane and tries again.
6. *Bounds.* A call waits at most ``max_rate_limit_wait`` seconds in all for its
   turns and penalties, and is refused at most ``max_ratelimited`` times; then
   ``SlackApiError("ratelimited", retryable=True)``. Transient failures get at most
   ``max_attempts`` attempts, within ``retry_window`` seconds of the first; then the
   last error is raised (``retryable=True``). Buckets that are full again are
   forgotten once there are more than ``max_buckets``.
7. *Posting once.* A ``chat.postMessage`` carrying ``metadata`` (``event_type`` and
   ``event_payload``) is never repeated blindly. After an attempt whose outcome is
   unknown (``SlackApiError.outcome_unknown``: no answer in time, a dropped
   connection, a 5xx, ``internal_error``...), the client looks for the post before
   anything else — before the next attempt, or before giving up:
   ``conversations.history`` (``conversations.replies`` for a ``thread_ts``) of the
   channel from ``lookup_margin`` seconds before the first attempt (wall clock),
   ``include_all_metadata``, at most ``lookup_pages`` pages of
   ``lookup_page_size``. A message by a bot with the same metadata is the answer
   (``{"ok": true, "channel", "ts"}``), and nothing is posted again. None: the next
   attempt posts (or the last error is raised). The lookup is an ordinary call,
   paced on its own tier-3 budget and retried like any other; if it fails, or the
   pages end before the search does, :class:`UnconfirmedPost` is raised
   (``post_unconfirmed``; retryable unless the lookup's error is permanent; an
   auth error is raised as itself) and nothing is posted. A later call for the
   same post passes ``unconfirmed_since`` (the first attempt's time): it looks
   before posting.

Durations come from trio (``trio.current_time``, ``trio.sleep``), so the pacing
can be tested on trio's ``MockClock``. Logs carry method names, channel ids,
error codes, HTTP statuses and seconds — never tokens, arguments or content.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, Self, TypeVar, overload
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from engine import Backoff, Clock, SystemClock

from ._errors import SlackApiError, UnconfirmedPost, translate_httpx_error
from ._files import FileTransfers
from ._pacing import Adaptation, Budget, Pacer
from ._views import Answer, History, HistoryMessage

A = TypeVar("A", bound=Answer)

log = logging.getLogger("interlink.slack.webapi")

POST_MESSAGE = "chat.postMessage"

#: Slack's tier of each method a relay uses (from the method specs). Methods Slack
#: calls "special" (auth.test, oauth.v2.access) count as tier 4 here; chat.postMessage
#: has its own budgets (see WebApiSettings) and is not in this table.
METHOD_TIERS: Mapping[str, int] = {
    "apps.connections.open": 3,
    "auth.test": 4,
    "bots.info": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.create": 2,
    "conversations.history": 3,
    "conversations.info": 3,
    "conversations.invite": 3,
    "conversations.join": 3,
    "conversations.kick": 3,
    "conversations.leave": 3,
    "conversations.list": 2,
    "conversations.members": 4,
    "conversations.open": 3,
    "conversations.replies": 3,
    "conversations.setTopic": 2,
    "files.completeUploadExternal": 4,
    "files.getUploadURLExternal": 4,
    "files.info": 4,
    "oauth.v2.access": 4,
    "reactions.add": 3,
    "reactions.remove": 2,
    "team.info": 3,
    "users.getPresence": 3,
    "users.info": 4,
    "users.list": 2,
    "users.lookupByEmail": 3,
    "users.profile.get": 4,
}


class WebApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the client talks to Slack. Budgets are per workspace (team) and per method."""

    base_url: str = "https://slack.com/api/"
    #: calls per minute for tiers 1-4 (Slack: 1+, 20+, 50+, 100+), each with a burst of
    #: a minute's worth
    tier_per_minute: tuple[float, float, float, float] = (1.0, 18.0, 45.0, 90.0)
    #: method -> tier (1-4); methods not listed are tier ``default_tier``
    method_tiers: dict[str, int] = msgspec.field(default_factory=lambda: dict(METHOD_TIERS))
    default_tier: int = 3
    #: chat.postMessage per channel: sustained messages per second, and the burst
    post_message_per_second: float = 1.0
    post_message_burst: int = 3
    #: ... and the most it adapts up to without a 429
    post_message_max_per_second: float = 10.0
    #: chat.postMessage per workspace, across channels (Slack publishes no number; its
    #: "several hundred per minute" is taken as 600 and started under)
    post_message_workspace_per_minute: float = 500.0
    post_message_workspace_burst: int = 50
    #: ... and the most it adapts up to without a 429
    post_message_workspace_max_per_minute: float = 6000.0
    #: adaptation of the chat.postMessage budgets: seconds of waiting callers with no
    #: 429 before a step up; a step (a fraction of the rate); the cut on a 429
    pacing_raise_after: float = 10.0
    pacing_raise_by: float = 0.25
    pacing_back_off_by: float = 0.5
    #: a 429 never cuts a channel's posting rate below this fraction of its start: the
    #: start is Slack's documented 1/s, so a 429 there is two clocks' jitter, answered
    #: by its Retry-After alone (halving on it halved a channel's throughput in the bench)
    pacing_floor: float = 1.0
    #: seconds for one HTTP request and its answer, once it has a connection
    timeout: float = 5.0
    #: requests on the wire at once (under httpx's pool of 100): the rest wait for a
    #: turn before their timeout starts, so a request that never left is never taken
    #: for one whose outcome is unknown (which would start a lookup, adding load)
    max_in_flight: int = 64
    #: transient failures are retried within this many seconds of the first attempt ...
    retry_window: float = 10.0
    #: ... at most this many attempts in all (429s are bounded apart, below)
    max_attempts: int = 5
    #: backoff before retry n is min(max_backoff, initial_backoff * 2**(n-1)), jittered
    #: into its upper half (``engine.Backoff`` with jitter 0.5, spread "below")
    initial_backoff: float = 0.25
    max_backoff: float = 4.0
    #: seconds one call may wait in all for its turns and for Retry-After penalties
    max_rate_limit_wait: float = 60.0
    #: 429 answers one call accepts before it gives up
    max_ratelimited: int = 5
    #: Retry-After when Slack sends none (or an unreadable one)
    default_retry_after: float = 1.0
    #: bytes: a Web API answer, an upload, a url_private download
    max_response_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    max_download_bytes: int = 50 * 1024 * 1024
    #: hosts (https only) the bot token may be sent to for url_private downloads,
    #: besides base_url's own origin
    download_hosts: tuple[str, ...] = ("files.slack.com",)
    #: buckets kept before full ones are forgotten
    max_buckets: int = 10_000
    #: finding a chat.postMessage whose outcome is unknown (rule 7): seconds before its
    #: first attempt the search starts (our clock against Slack's), and how far it reads
    lookup_margin: float = 60.0
    lookup_pages: int = 3
    lookup_page_size: int = 200

    def tier_of(self, method: str) -> int:
        return self.method_tiers.get(method, self.default_tier)


class WebApiStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters since the client was made."""

    #: Web API requests sent (every attempt counts)
    calls: int
    #: HTTP 429 (or ``ratelimited``) answers received
    ratelimited: int
    #: attempts after a call's first, for 429s and transient failures
    retries: int
    #: calls that raised SlackApiError
    errors: int
    #: seconds callers spent waiting for turns, Retry-After and backoff
    waited: float
    #: token buckets held now
    buckets: int
    #: chat.postMessage rates raised after quiet periods, and cut after 429s
    rates_raised: int = 0
    rates_cut: int = 0
    #: posts whose outcome was unknown, looked up (rule 7); found there; left unconfirmed
    post_lookups: int = 0
    posts_found: int = 0
    posts_unconfirmed: int = 0


_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class _RateLimited(Exception):
    """A 429 (or an ok=false "ratelimited"): wait ``retry_after`` on the key and go again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("ratelimited")
        self.retry_after = retry_after


class SlackWebClient(FileTransfers):
    """Slack's Web API over httpx, paced per workspace, method and channel.

    Usable as an async context manager; ``aclose()`` closes the HTTP client if this
    client made it. An injected ``http`` client stays open (its owner closes it).
    ``clock``: wall time, for where a lookup of a post starts (rule 7).
    """

    def __init__(self, *, settings: WebApiSettings | None = None,
                 http: httpx.AsyncClient | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or WebApiSettings()
        self.clock: Clock = clock or SystemClock()
        base = self.settings.base_url
        self._base_url = base if base.endswith("/") else base + "/"
        origin = urlsplit(self._base_url)
        self._origin = (origin.scheme, origin.netloc.lower())
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False)
        self._in_flight = trio.CapacityLimiter(max(1, self.settings.max_in_flight))
        self.pacer = Pacer(max_buckets=self.settings.max_buckets, adaptation=Adaptation(
            raise_after=self.settings.pacing_raise_after,
            raise_by=self.settings.pacing_raise_by,
            back_off_by=self.settings.pacing_back_off_by,
            floor=self.settings.pacing_floor))
        self._random = random.Random()
        self._backoff_policy = Backoff(
            initial=self.settings.initial_backoff, maximum=self.settings.max_backoff,
            jitter=0.5, spread="below")
        self._calls = 0
        self._ratelimited = 0
        self._retries = 0
        self._errors = 0
        self._backoff_waited = 0.0
        self._post_lookups = 0
        self._posts_found = 0
        self._posts_unconfirmed = 0

    def use_base_url(self, base_url: str) -> None:
        """Send calls to ``base_url`` from now on (an embedded sandbox's, known once it
        serves); the pacing state is kept."""
        self.settings = msgspec.structs.replace(self.settings, base_url=base_url)
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        origin = urlsplit(self._base_url)
        self._origin = (origin.scheme, origin.netloc.lower())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def statistics(self) -> WebApiStatistics:
        return WebApiStatistics(
            calls=self._calls, ratelimited=self._ratelimited, retries=self._retries,
            errors=self._errors, waited=self.pacer.waited + self._backoff_waited,
            buckets=self.pacer.bucket_count, rates_raised=self.pacer.raised,
            rates_cut=self.pacer.cut, post_lookups=self._post_lookups,
            posts_found=self._posts_found, posts_unconfirmed=self._posts_unconfirmed)

    # -- Web API calls --------------------------------------------------------------------
    @overload
    async def call(self, method: str, *, token: str, team_id: str,
                   args: Mapping[str, Any] | None = None,
                   unconfirmed_since: float | None = None) -> dict[str, Any]: ...

    @overload
    async def call(self, method: str, *, token: str, team_id: str,
                   args: Mapping[str, Any] | None = None, into: type[A],
                   unconfirmed_since: float | None = None) -> A: ...

    async def call(self, method: str, *, token: str, team_id: str,
                   args: Mapping[str, Any] | None = None,
                   into: type[Answer] | None = None,
                   unconfirmed_since: float | None = None) -> Answer | dict[str, Any]:
        """Call ``method`` as ``token`` in workspace ``team_id``; Slack's ok answer.

        ``into``: the view (a subclass of :class:`._views.Answer`) the answer is
        decoded into, once; without it, a dict. An ok answer whose fields do not
        fit the view is ``SlackApiError("invalid_response")``. Raises
        :class:`SlackApiError` for an error answer, after the retries and waits the
        settings allow (see the module's rules).

        ``unconfirmed_since``: this ``chat.postMessage`` (with ``metadata``) was tried
        before, from that wall-clock time, and its outcome is unknown
        (:class:`UnconfirmedPost`): it is looked up before it is posted (rule 7).
        """
        args = dict(args or {})
        channel = str(args.get("channel") or "") if method == POST_MESSAGE else ""
        key: tuple[str, ...] = (team_id, method, channel) if method == POST_MESSAGE \
            else (team_id, method)
        deadline = trio.current_time() + self.settings.max_rate_limit_wait
        try:
            if method == POST_MESSAGE:  # one post per channel in flight: order is kept
                async with self.pacer.lane(key, deadline=deadline):
                    return await self._call(method, token, team_id, args, into, key,
                                            deadline, hold_lane=True,
                                            unconfirmed_since=unconfirmed_since)
            return await self._call(method, token, team_id, args, into, key, deadline,
                                    hold_lane=False)
        except SlackApiError as exc:
            self._errors += 1
            log.debug("slack api error", extra={
                "method": method, "team_id": team_id, "channel": channel or None,
                "error": exc.error, "status": exc.status, "retryable": exc.retryable})
            raise

    def _budgets(self, team_id: str, method: str, channel: str) -> list[Budget]:
        s = self.settings
        if method == POST_MESSAGE:
            return [Budget((team_id, method), s.post_message_workspace_per_minute / 60.0,
                           float(max(1, s.post_message_workspace_burst)),
                           s.post_message_workspace_max_per_minute / 60.0),
                    Budget((team_id, method, channel), s.post_message_per_second,
                           float(max(1, s.post_message_burst)),
                           s.post_message_max_per_second)]
        per_minute = s.tier_per_minute[min(4, max(1, s.tier_of(method))) - 1]
        return [Budget((team_id, method), per_minute / 60.0, max(1.0, per_minute))]

    async def _call(self, method: str, token: str, team_id: str, args: dict[str, Any],
                    into: type[Answer] | None, key: tuple[str, ...], deadline: float, *,
                    hold_lane: bool, unconfirmed_since: float | None = None
                    ) -> Answer | dict[str, Any]:
        s = self.settings
        budgets = self._budgets(team_id, method, key[2] if len(key) > 2 else "")
        failures = 0  # transient ones; 429s are counted apart
        refusals = 0
        window_end: float | None = None
        post = _Post.of(method, args)  # a post to make once (rule 7), or None
        since = unconfirmed_since if post is not None else None  # its first attempt
        maybe_posted = since is not None  # an earlier attempt may have posted it
        while True:
            if maybe_posted:
                assert post is not None and since is not None
                found = await self._find_post(post, token, team_id, since, into)
                if found is not None:
                    return found
                maybe_posted = False
            if hold_lane:
                await self.pacer.wait_turn(key, budgets, deadline=deadline)
            else:
                async with self.pacer.lane(key, deadline=deadline):
                    await self.pacer.wait_turn(key, budgets, deadline=deadline)
            if window_end is None:
                window_end = trio.current_time() + s.retry_window
            if post is not None and since is None:
                since = self.clock.now()
            try:
                return await self._post(method, token, args, into)
            except _RateLimited as limited:
                self._ratelimited += 1
                refusals += 1
                wait = limited.retry_after
                log.info("slack rate limited", extra={
                    "method": method, "team_id": team_id,
                    "channel": key[2] if len(key) > 2 else None, "retry_after_s": wait})
                # the key's own bucket starts again from empty after the penalty; the
                # posting rates step down (the workspace's not below its start)
                self.pacer.penalise(key, wait, drain=budgets[-1:], back_off=[
                    (budgets[-1], self.pacer.adaptation.floor),
                    *((budget, 1.0) for budget in budgets[:-1])])
                if refusals > s.max_ratelimited or trio.current_time() + wait > deadline:
                    raise SlackApiError("ratelimited", method=method, retryable=True,
                                        retry_after=wait, status=429) from None
                self._retries += 1
            except SlackApiError as exc:
                failures += 1
                maybe_posted = post is not None and exc.outcome_unknown
                if not exc.retryable or failures >= s.max_attempts:
                    return await self._give_up(exc, post if maybe_posted else None, token,
                                               team_id, since, into)
                backoff = self._backoff(failures)
                if trio.current_time() + backoff > window_end:
                    return await self._give_up(exc, post if maybe_posted else None, token,
                                               team_id, since, into)
                self._retries += 1
                log.info("slack call will retry", extra={
                    "method": method, "team_id": team_id, "error": exc.error,
                    "attempt": failures, "backoff_s": round(backoff, 3)})
                self._backoff_waited += backoff
                await trio.sleep(backoff)

    def _backoff(self, attempts: int) -> float:
        return self._backoff_policy.delay(attempts, self._random)

    async def _give_up(self, exc: SlackApiError, post: _Post | None, token: str,
                       team_id: str, since: float | None, into: type[Answer] | None
                       ) -> Answer | dict[str, Any]:
        """No more attempts: raise ``exc``, unless ``post`` (its last attempt's outcome
        unknown) turns out to be there."""
        if post is None or since is None:
            raise exc
        found = await self._find_post(post, token, team_id, since, into)
        if found is None:
            raise exc
        return found

    async def find_post(self, *, channel: str, metadata: Mapping[str, Any], token: str,
                        team_id: str, since: float) -> str | None:
        """The ts of the bot's message in ``channel`` (not in a thread) carrying
        ``metadata``, posted from ``since`` (wall clock) on; ``None`` when there is none;
        :class:`UnconfirmedPost` when that cannot be told (rule 7's lookup)."""
        post = _Post.of(POST_MESSAGE, {"channel": channel, "metadata": metadata})
        if post is None:
            raise ValueError("find_post needs a channel and metadata with a type and payload")
        found = await self._find_post(post, token, team_id, since, None)
        return None if not isinstance(found, dict) else str(found["ts"])

    async def _find_post(self, post: _Post, token: str, team_id: str, since: float,
                         into: type[Answer] | None) -> Answer | dict[str, Any] | None:
        """The answer for ``post`` if Slack has it; None if it has not; UnconfirmedPost
        if that cannot be told (rule 7)."""
        s = self.settings
        self._post_lookups += 1
        method = "conversations.replies" if post.thread_ts else "conversations.history"
        args: dict[str, Any] = {
            "channel": post.channel, "oldest": f"{max(0.0, since - s.lookup_margin):.6f}",
            "inclusive": True, "include_all_metadata": True,
            "limit": max(1, s.lookup_page_size)}
        if post.thread_ts:
            args["ts"] = post.thread_ts
        cursor = ""
        for _ in range(max(1, s.lookup_pages)):
            try:
                page = await self.call(method, token=token, team_id=team_id,
                                       args={**args, "cursor": cursor or None}, into=History)
            except SlackApiError as exc:
                if exc.auth_failed:  # the token is dead: nothing can be posted or read
                    raise
                raise self._unconfirmed(post, team_id, since, exc.error,
                                        retryable=exc.retryable) from None
            for message in page.messages:
                if post.matches(message):
                    self._posts_found += 1
                    log.info("slack post found after an unknown outcome", extra={
                        "team_id": team_id, "channel": post.channel, "ts": message.ts})
                    answer = {"ok": True, "channel": post.channel, "ts": message.ts}
                    return answer if into is None else msgspec.convert(answer, into)
            cursor = page.next_cursor
            if not page.has_more or not cursor:
                return None
        raise self._unconfirmed(post, team_id, since, "lookup_incomplete", retryable=True)

    def _unconfirmed(self, post: _Post, team_id: str, since: float, cause: str, *,
                     retryable: bool) -> UnconfirmedPost:
        self._posts_unconfirmed += 1
        log.info("slack post unconfirmed: its outcome is unknown and the lookup failed",
                 extra={"team_id": team_id, "channel": post.channel, "cause": cause})
        return UnconfirmedPost(since=since, cause=cause, retryable=retryable)

    async def _post(self, method: str, token: str, args: dict[str, Any],
                    into: type[Answer] | None) -> Answer | dict[str, Any]:
        """One attempt: an ok answer, or _RateLimited, or SlackApiError."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content: bytes | None = None
        data: dict[str, str] | None = None
        if method.startswith("chat."):
            headers["Content-Type"] = "application/json; charset=utf-8"
            content = _encoder.encode({k: v for k, v in args.items() if v is not None})
        else:
            data = _form(args)
        self._calls += 1
        status, response_headers, body = await self._exchange(
            method, self._base_url + method, headers=headers, content=content, data=data)
        if status == 429:
            raise _RateLimited(self._retry_after(response_headers))
        if into is not None and status == 200:
            view = _decode_view(body, into)
            if view is not None and view.ok:
                return view
            if view is not None and view.error == "ratelimited":
                raise _RateLimited(self._retry_after(response_headers))
            if view is not None and view.error:
                raise SlackApiError(view.error, method=method, status=status,
                                    needed=view.needed or None)
        answer = _json_object(body)  # an error, or an answer that does not fit the view
        fallback = f"http_{status}" if status != 200 else "invalid_response"
        if answer is None:  # not Slack's JSON: a proxy, a load balancer, a broken answer
            raise SlackApiError(fallback, method=method, status=status,
                                retryable=True if status >= 500 or status == 200 else None)
        if status == 200 and answer.get("ok") is True:
            if into is None:
                return answer
            raise SlackApiError("invalid_response", method=method, status=status,
                                retryable=False)  # ok, but a field of the wrong type
        code = answer.get("error")
        error = code if isinstance(code, str) and code else fallback
        if error == "ratelimited":
            raise _RateLimited(self._retry_after(response_headers))
        needed = answer.get("needed")
        raise SlackApiError(error, method=method, status=status,
                            retryable=True if status >= 500 else None,
                            needed=needed if isinstance(needed, str) else None)

    def _retry_after(self, headers: httpx.Headers) -> float:
        try:
            seconds = float(headers.get("retry-after", ""))
        except ValueError:
            return self.settings.default_retry_after
        return seconds if 0 <= seconds < float("inf") else self.settings.default_retry_after

    async def _exchange(self, method: str, url: str, *, headers: dict[str, str],
                        content: bytes | None = None, data: dict[str, str] | None = None
                        ) -> tuple[int, httpx.Headers, bytes]:
        """POST and read the answer, bounded in time (once on the wire: see
        ``max_in_flight``) and size; transport errors translated."""
        async with self._in_flight:
            return await self._exchange_now(method, url, headers=headers, content=content,
                                            data=data)

    async def _exchange_now(self, method: str, url: str, *, headers: dict[str, str],
                            content: bytes | None, data: dict[str, str] | None
                            ) -> tuple[int, httpx.Headers, bytes]:
        limit = self.settings.max_response_bytes
        with trio.move_on_after(self.settings.timeout):
            try:
                async with self._http.stream("POST", url, headers=headers, content=content,
                                             data=data, timeout=self.settings.timeout
                                             ) as response:
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise SlackApiError("response_too_large", method=method,
                                            status=response.status_code, retryable=False)
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise SlackApiError("response_too_large", method=method,
                                                status=response.status_code, retryable=False)
                        chunks.append(chunk)
                    return response.status_code, response.headers, b"".join(chunks)
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError,
                    httpx.CookieConflict) as exc:
                raise translate_httpx_error(exc, method) from None
        raise SlackApiError("timeout", method=method, retryable=True)


class _Post(msgspec.Struct, frozen=True, kw_only=True):
    """A chat.postMessage that names itself in its ``metadata``: what finding it needs."""

    channel: str
    thread_ts: str
    event_type: str
    event_payload: dict[str, Any]

    @classmethod
    def of(cls, method: str, args: Mapping[str, Any]) -> _Post | None:
        if method != POST_MESSAGE:
            return None
        metadata = args.get("metadata")
        channel = args.get("channel")
        if not isinstance(metadata, Mapping) or not isinstance(channel, str) or not channel:
            return None
        event_type = metadata.get("event_type")
        payload = metadata.get("event_payload")
        if not isinstance(event_type, str) or not event_type or not isinstance(
                payload, Mapping) or not payload:
            return None
        thread_ts = args.get("thread_ts")
        return cls(channel=channel, thread_ts=thread_ts if isinstance(thread_ts, str) else "",
                   event_type=event_type, event_payload=dict(payload))

    def matches(self, message: HistoryMessage) -> bool:
        """A bot's message with this post's metadata (only apps post metadata)."""
        metadata = message.metadata
        return bool(message.bot_id) and metadata is not None \
            and metadata.event_type == self.event_type \
            and metadata.event_payload == self.event_payload


def _form(args: Mapping[str, Any]) -> dict[str, str]:
    """Form fields as slack-sdk sends them: booleans 1/0, lists comma-joined, objects JSON."""
    form: dict[str, str] = {}
    for name, value in args.items():
        if value is None:
            continue
        if isinstance(value, bool):
            form[name] = "1" if value else "0"
        elif isinstance(value, str):
            form[name] = value
        elif isinstance(value, int | float):
            form[name] = str(value)
        elif isinstance(value, list | tuple) and all(
                isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
                for v in value):
            form[name] = ",".join(str(v) for v in value)
        else:
            form[name] = _encoder.encode(value).decode()
    return form


_view_decoders: dict[type[Answer], msgspec.json.Decoder[Any]] = {}


def _decode_view(body: bytes, into: type[A]) -> A | None:
    """``body`` as the view ``into`` (one decoder per view, reused), or None if it does
    not fit."""
    decoder = _view_decoders.get(into)
    if decoder is None:
        decoder = _view_decoders[into] = msgspec.json.Decoder(into)
    try:
        view: A = decoder.decode(body)
    except msgspec.DecodeError:
        return None
    return view


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:
        return None
