"""The Slack Web API client: every outbound call the Slack adapter makes.

One call goes::

    SlackWebClient.call(method, token=, team_id=, args=)
      -> its lane (FIFO per key) -> pacing (local token buckets, 429 penalties)
      -> POST base_url + method (JSON for chat.*, a form otherwise, as slack-sdk does)
      -> ok: the JSON answer
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
   ``chat.postMessage``, ``(team, channel)`` at 1 per second with a burst of 3.
   Budgets sit a little under Slack's, so a 429 is rare.
4. *429.* ``Retry-After`` penalises the call's key only, and empties that key's
   bucket (so the pace after the penalty is ours, not a new burst). The call waits
   out the penalty in its lane and tries again.
5. *Bounds.* A call waits at most ``max_rate_limit_wait`` seconds in all for its
   turns and penalties, and is refused at most ``max_ratelimited`` times; then
   ``SlackApiError("ratelimited", retryable=True)``. Transient failures get at most
   ``max_attempts`` attempts, within ``retry_window`` seconds of the first; then the
   last error is raised (``retryable=True``). Buckets that are full again are
   forgotten once there are more than ``max_buckets``.

Durations come from trio (``trio.current_time``, ``trio.sleep``), so the pacing
can be tested on trio's ``MockClock``. Logs carry method names, channel ids,
error codes, HTTP statuses and seconds — never tokens, arguments or content.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from engine import Backoff, RemoteError

log = logging.getLogger("interlink.slack.webapi")

__all__ = [
    "AUTH_ERRORS",
    "METHOD_TIERS",
    "TRANSIENT_ERRORS",
    "Budget",
    "Download",
    "Pacer",
    "SlackApiError",
    "SlackWebClient",
    "TokenBucket",
    "WebApiSettings",
    "WebApiStatistics",
    "is_transient",
]

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

#: error codes worth trying again later: Slack's own trouble, and ours on the way there
TRANSIENT_ERRORS: frozenset[str] = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "ratelimited", "team_added_to_org",
    "timeout", "connection_error", "invalid_response",
})

#: error codes that mean the token is no good: stop using it and tell the operator
AUTH_ERRORS: frozenset[str] = frozenset({
    "not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "org_login_required", "ekm_access_denied", "team_access_not_granted",
})


def is_transient(error: str) -> bool:
    """Whether an error code is worth retrying: the table above, and every HTTP 5xx.

    Everything else is permanent: ``channel_not_found``, ``not_in_channel``,
    ``is_archived``, ``missing_scope``, ``message_not_found``, ``cant_update_message``,
    ``msg_too_long``, ``invalid_arguments``, the auth errors, unknown codes, ...
    """
    return error in TRANSIENT_ERRORS or (error.startswith("http_5") and len(error) == 8)


class SlackApiError(RemoteError):
    """Slack did not do what was asked. The message is ``method: error``, nothing more.

    ``error`` is Slack's code (``channel_not_found``, ``ratelimited``, ...) or one of
    ours: ``http_<status>``, ``timeout``, ``connection_error``, ``invalid_response``,
    ``file_too_large``, ``length_mismatch``, ``untrusted_url``, ``invalid_url``,
    ``invalid_request``. ``retryable`` says whether the same call may succeed later
    (the session's own retry decides when); ``needed`` is the scope a
    ``missing_scope`` asked for; ``retry_after`` the seconds Slack asked to wait;
    ``status`` the HTTP status, when there was one.
    """

    def __init__(self, error: str, *, method: str, retryable: bool | None = None,
                 needed: str | None = None, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(f"{method}: {error}")
        self.error = error
        self.method = method
        self.retryable = is_transient(error) if retryable is None else retryable
        self.needed = needed
        self.retry_after = retry_after
        self.status = status

    @property
    def auth_failed(self) -> bool:
        """The token is revoked, expired or otherwise no longer accepted."""
        return self.error in AUTH_ERRORS


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
    #: chat.postMessage per workspace, across channels (Slack publishes no number; its
    #: "several hundred per minute" is taken as 600 and kept under)
    post_message_workspace_per_minute: float = 500.0
    post_message_workspace_burst: int = 50
    #: seconds for one HTTP request and its answer
    timeout: float = 5.0
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


# -- pacing: token buckets, lanes, penalties ---------------------------------------------------

_EPSILON = 1e-9


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; time is passed in."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 if one is there now)."""
        self.refill(now)
        missing = 1.0 - self.tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def take(self, now: float) -> None:
        self.refill(now)
        self.tokens -= 1.0

    def drain(self, now: float) -> None:
        """Slack said stop: no tokens left, refill from now."""
        self.refill(now)
        self.tokens = min(self.tokens, 0.0)

    def is_full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.burst - _EPSILON


class Budget(NamedTuple):
    """One bucket a call draws on: its key, and its size."""

    key: tuple[str, ...]
    per_second: float
    burst: float


class _Lane:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()  # fair: turns go in arrival order
        self.users = 0


class Pacer:
    """Lanes, token buckets and 429 penalties, by key; the client's rate limiting.

    Keys are tuples, ``(team, method)`` or ``(team, method, channel)``; their second
    element names the method in the errors raised.
    """

    def __init__(self, *, max_buckets: int = 10_000) -> None:
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._penalties: dict[tuple[str, ...], float] = {}
        self._lanes: dict[tuple[str, ...], _Lane] = {}
        self._prune_at = max_buckets
        self.waited = 0.0

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    @property
    def lane_count(self) -> int:
        return len(self._lanes)

    @asynccontextmanager
    async def lane(self, key: tuple[str, ...], *, deadline: float) -> AsyncIterator[None]:
        """Hold ``key``'s lane: callers on one key go one at a time, in arrival order."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.users += 1
        start = trio.current_time()
        try:
            with trio.move_on_at(deadline) as scope:
                await lane.lock.acquire()
            self.waited += trio.current_time() - start
            if scope.cancelled_caught:  # cancelled while parked: the lock was not taken
                raise _too_long(key, 0.0)
            try:
                yield
            finally:
                lane.lock.release()
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]

    async def wait_turn(self, key: tuple[str, ...], budgets: Sequence[Budget], *,
                        deadline: float) -> float:
        """Wait out ``key``'s penalty and a token in every budget, then take them.

        Returns the seconds waited. A turn that would come after ``deadline`` raises
        ``SlackApiError("ratelimited", retryable=True)`` at once, without waiting.
        """
        start = trio.current_time()
        while True:
            now = trio.current_time()
            wait = self._penalty_left(key, now)
            for budget in budgets:
                wait = max(wait, self._bucket(budget, now).wait(now))
            if wait <= 0.0:
                for budget in budgets:
                    self._bucket(budget, now).take(now)
                waited = now - start
                self.waited += waited
                return waited
            if now + wait > deadline:
                self.waited += now - start
                raise _too_long(key, wait)
            await trio.sleep(wait)

    def penalise(self, key: tuple[str, ...], seconds: float,
                 drain: Sequence[Budget] = ()) -> None:
        """Slack answered 429 on ``key``: nobody on it goes for ``seconds``."""
        now = trio.current_time()
        until = now + max(0.0, seconds)
        self._penalties[key] = max(until, self._penalties.get(key, until))
        for budget in drain:
            self._bucket(budget, now).drain(now)
        if len(self._penalties) > self.max_buckets:
            for old, ends in list(self._penalties.items()):
                if ends <= now:
                    del self._penalties[old]

    def penalty_left(self, key: tuple[str, ...]) -> float:
        """Seconds until ``key`` may go again after a 429 (0 when it may)."""
        return self._penalty_left(key, trio.current_time())

    def _penalty_left(self, key: tuple[str, ...], now: float) -> float:
        ends = self._penalties.get(key)
        if ends is None:
            return 0.0
        if ends <= now:
            del self._penalties[key]
            return 0.0
        return ends - now

    def _bucket(self, budget: Budget, now: float) -> TokenBucket:
        bucket = self._buckets.get(budget.key)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._forget_full(now)
            bucket = self._buckets[budget.key] = TokenBucket(
                budget.per_second, budget.burst, now)
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop buckets that are full again: a new one would be the same."""
        for key, bucket in list(self._buckets.items()):
            if bucket.is_full(now):
                del self._buckets[key]
        # prune again only once the survivors have doubled: amortised O(1) per call
        self._prune_at = max(self.max_buckets, 2 * len(self._buckets))


def _too_long(key: tuple[str, ...], wait: float) -> SlackApiError:
    method = key[1] if len(key) > 1 else ""
    return SlackApiError("ratelimited", method=method, retryable=True,
                         retry_after=wait or None)


# -- the client --------------------------------------------------------------------------------

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class _RateLimited(Exception):
    """A 429 (or an ok=false "ratelimited"): wait ``retry_after`` on the key and go again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("ratelimited")
        self.retry_after = retry_after


class _LengthMismatch(Exception):
    pass


class SlackWebClient:
    """Slack's Web API over httpx, paced per workspace, method and channel.

    Usable as an async context manager; ``aclose()`` closes the HTTP client if this
    client made it. An injected ``http`` client stays open (its owner closes it).
    """

    def __init__(self, *, settings: WebApiSettings | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings or WebApiSettings()
        base = self.settings.base_url
        self._base_url = base if base.endswith("/") else base + "/"
        origin = urlsplit(self._base_url)
        self._origin = (origin.scheme, origin.netloc.lower())
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False)
        self.pacer = Pacer(max_buckets=self.settings.max_buckets)
        self._random = random.Random()
        self._backoff_policy = Backoff(
            initial=self.settings.initial_backoff, maximum=self.settings.max_backoff,
            jitter=0.5, spread="below")
        self._calls = 0
        self._ratelimited = 0
        self._retries = 0
        self._errors = 0
        self._backoff_waited = 0.0

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
            buckets=self.pacer.bucket_count)

    # -- Web API calls --------------------------------------------------------------------
    async def call(self, method: str, *, token: str, team_id: str,
                   args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call ``method`` as ``token`` in workspace ``team_id``; Slack's ok answer.

        Raises :class:`SlackApiError` for an error answer, after the retries and
        waits the settings allow (see the module's rules).
        """
        args = dict(args or {})
        channel = str(args.get("channel") or "") if method == POST_MESSAGE else ""
        key: tuple[str, ...] = (team_id, method, channel) if method == POST_MESSAGE \
            else (team_id, method)
        deadline = trio.current_time() + self.settings.max_rate_limit_wait
        try:
            if method == POST_MESSAGE:  # one post per channel in flight: order is kept
                async with self.pacer.lane(key, deadline=deadline):
                    return await self._call(method, token, team_id, args, key, deadline,
                                            hold_lane=True)
            return await self._call(method, token, team_id, args, key, deadline,
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
                           float(max(1, s.post_message_workspace_burst))),
                    Budget((team_id, method, channel), s.post_message_per_second,
                           float(max(1, s.post_message_burst)))]
        per_minute = s.tier_per_minute[min(4, max(1, s.tier_of(method))) - 1]
        return [Budget((team_id, method), per_minute / 60.0, max(1.0, per_minute))]

    async def _call(self, method: str, token: str, team_id: str, args: dict[str, Any],
                    key: tuple[str, ...], deadline: float, *, hold_lane: bool
                    ) -> dict[str, Any]:
        s = self.settings
        budgets = self._budgets(team_id, method, key[2] if len(key) > 2 else "")
        failures = 0  # transient ones; 429s are counted apart
        refusals = 0
        window_end: float | None = None
        while True:
            if hold_lane:
                await self.pacer.wait_turn(key, budgets, deadline=deadline)
            else:
                async with self.pacer.lane(key, deadline=deadline):
                    await self.pacer.wait_turn(key, budgets, deadline=deadline)
            if window_end is None:
                window_end = trio.current_time() + s.retry_window
            try:
                return await self._post(method, token, args)
            except _RateLimited as limited:
                self._ratelimited += 1
                refusals += 1
                wait = limited.retry_after
                log.info("slack rate limited", extra={
                    "method": method, "team_id": team_id,
                    "channel": key[2] if len(key) > 2 else None, "retry_after_s": wait})
                # the key's own bucket starts again from empty after the penalty
                self.pacer.penalise(key, wait, drain=budgets[-1:])
                if refusals > s.max_ratelimited or trio.current_time() + wait > deadline:
                    raise SlackApiError("ratelimited", method=method, retryable=True,
                                        retry_after=wait, status=429) from None
                self._retries += 1
            except SlackApiError as exc:
                failures += 1
                if not exc.retryable or failures >= s.max_attempts:
                    raise
                backoff = self._backoff(failures)
                if trio.current_time() + backoff > window_end:
                    raise
                self._retries += 1
                log.info("slack call will retry", extra={
                    "method": method, "team_id": team_id, "error": exc.error,
                    "attempt": failures, "backoff_s": round(backoff, 3)})
                self._backoff_waited += backoff
                await trio.sleep(backoff)

    def _backoff(self, attempts: int) -> float:
        return self._backoff_policy.delay(attempts, self._random)

    async def _post(self, method: str, token: str, args: dict[str, Any]) -> dict[str, Any]:
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
        answer = _json_object(body)
        fallback = f"http_{status}" if status != 200 else "invalid_response"
        if answer is None:  # not Slack's JSON: a proxy, a load balancer, a broken answer
            raise SlackApiError(fallback, method=method, status=status,
                                retryable=True if status >= 500 or status == 200 else None)
        if status == 200 and answer.get("ok") is True:
            return answer
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
        """POST and read the answer, bounded in time and size; transport errors translated."""
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

    # -- files ----------------------------------------------------------------------------
    async def upload_file(self, *, token: str, team_id: str, channel_id: str, filename: str,
                          content: AsyncIterable[bytes] | bytes, length: int, title: str = "",
                          initial_comment: str = "", thread_ts: str | None = None
                          ) -> dict[str, Any]:
        """Upload ``length`` bytes and share them in ``channel_id``; Slack's file object.

        files.getUploadURLExternal, then the bytes to its ``upload_url`` (streamed;
        no token goes there, as with slack-sdk), then files.completeUploadExternal.
        Bytes are retried on transient failures; a stream cannot be replayed, so its
        failure is raised (``retryable=True``) for the caller to start over.
        """
        step = "files.getUploadURLExternal"
        if length <= 0 or length > self.settings.max_upload_bytes:
            raise SlackApiError("file_too_large" if length > 0 else "length_mismatch",
                                method=step, retryable=False)
        if isinstance(content, bytes | bytearray | memoryview) and len(content) != length:
            raise SlackApiError("length_mismatch", method=step, retryable=False)
        got = await self.call(step, token=token, team_id=team_id,
                              args={"filename": filename, "length": length})
        upload_url, file_id = got.get("upload_url"), got.get("file_id")
        if not isinstance(upload_url, str) or not isinstance(file_id, str):
            raise SlackApiError("invalid_response", method=step, retryable=False)
        await self._upload_bytes(upload_url, content, length)
        args: dict[str, Any] = {"files": [{"id": file_id, "title": title or filename}],
                                "channel_id": channel_id}
        if initial_comment:
            args["initial_comment"] = initial_comment
        if thread_ts:
            args["thread_ts"] = thread_ts
        done = await self.call("files.completeUploadExternal", token=token, team_id=team_id,
                               args=args)
        files = done.get("files")
        if not isinstance(files, list) or not files or not isinstance(files[0], dict):
            raise SlackApiError("invalid_response", method="files.completeUploadExternal",
                                retryable=False)
        file: dict[str, Any] = files[0]
        return file

    async def _upload_bytes(self, url: str, content: AsyncIterable[bytes] | bytes,
                            length: int) -> None:
        step = "files.upload"
        replayable = isinstance(content, bytes | bytearray | memoryview)
        attempts = 0
        window_end = trio.current_time() + self.settings.retry_window
        while True:
            attempts += 1
            try:
                await self._send_upload(url, content, length)
                return
            except SlackApiError as exc:
                if not (exc.retryable and replayable) or attempts >= self.settings.max_attempts:
                    raise
                backoff = self._backoff(attempts)
                if trio.current_time() + backoff > window_end:
                    raise
                self._retries += 1
                log.info("slack upload will retry", extra={
                    "method": step, "error": exc.error, "attempt": attempts,
                    "backoff_s": round(backoff, 3)})
                self._backoff_waited += backoff
                await trio.sleep(backoff)

    async def _send_upload(self, url: str, content: AsyncIterable[bytes] | bytes,
                           length: int) -> None:
        step = "files.upload"
        body: bytes | AsyncGenerator[bytes, None]
        stream: AsyncGenerator[bytes, None] | None = None
        if isinstance(content, bytes | bytearray | memoryview):
            body = bytes(content)
        else:
            body = stream = _exactly(content, length)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except _LengthMismatch:
            raise SlackApiError("length_mismatch", method=step, retryable=False) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError,
                httpx.CookieConflict) as exc:
            if isinstance(exc.__context__, _LengthMismatch):
                raise SlackApiError("length_mismatch", method=step, retryable=False) from None
            raise translate_httpx_error(exc, step) from None
        finally:
            if stream is not None:
                await stream.aclose()  # httpx may leave it unfinished on a failure
        if response.status_code == 200:
            return
        error = {413: "file_too_large", 404: "upload_url_not_found"}.get(
            response.status_code, f"http_{response.status_code}")
        raise SlackApiError(error, method=step, status=response.status_code)

    @asynccontextmanager
    async def download(self, url: str, *, token: str) -> AsyncIterator[Download]:
        """Open a ``url_private`` download with ``token``; iterate the yielded Download.

        The token is sent only to base_url's origin and to ``download_hosts`` over
        https (``untrusted_url`` otherwise). A redirect, 401 or 403 (Slack's answer to
        a token that may not see the file) is ``file_access_denied``; 404
        ``file_not_found``; more than ``max_download_bytes`` ``file_too_large``.
        Opening is retried on transient failures; reading is not.
        """
        step = "files.download"
        if not self._may_send_token_to(url):
            raise SlackApiError("untrusted_url", method=step, retryable=False)
        attempts = 0
        window_end = trio.current_time() + self.settings.retry_window
        while True:
            attempts += 1
            try:
                response = await self._open_download(url, token)
                break
            except SlackApiError as exc:
                if not exc.retryable or attempts >= self.settings.max_attempts:
                    raise
                backoff = self._backoff(attempts)
                if trio.current_time() + backoff > window_end:
                    raise
                self._retries += 1
                self._backoff_waited += backoff
                await trio.sleep(backoff)
        try:
            yield Download(response, self.settings.max_download_bytes)
        finally:
            await response.aclose()

    async def _open_download(self, url: str, token: str) -> httpx.Response:
        step = "files.download"
        request = self._http.build_request("GET", url, headers={
            "Authorization": f"Bearer {token}"}, timeout=self.settings.timeout)
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError,
                httpx.CookieConflict) as exc:
            raise translate_httpx_error(exc, step) from None
        status = response.status_code
        content_type = response.headers.get("content-type", "")
        error: str | None = None
        if 300 <= status < 400 or status in (401, 403):
            error = "file_access_denied"
        elif status == 404:
            error = "file_not_found"
        elif status != 200:
            error = f"http_{status}"
        elif content_type.startswith("text/html"):
            error = "file_access_denied"  # Slack's sign-in page, not the file
        else:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.settings.max_download_bytes:
                error = "file_too_large"
        if error is not None:
            await response.aclose()
            raise SlackApiError(error, method=step, status=status)
        return response

    def _may_send_token_to(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if (parts.scheme, parts.netloc.lower()) == self._origin:
            return True
        return (parts.scheme == "https" and port in (None, 443) and not parts.username
                and (parts.hostname or "") in self.settings.download_hosts)


class Download:
    """An open download: its content type, its declared length, and its bytes (once)."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response = response
        self._limit = limit
        self.content_type: str = response.headers.get("content-type", "")
        declared = response.headers.get("content-length", "")
        self.content_length: int | None = int(declared) if declared.isdigit() else None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        step = "files.download"
        size = 0
        try:
            async for chunk in self._response.aiter_bytes():
                size += len(chunk)
                if size > self._limit:
                    raise SlackApiError("file_too_large", method=step, retryable=False)
                yield chunk
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise translate_httpx_error(exc, step) from None

    async def read(self) -> bytes:
        """All of it (bounded by ``max_download_bytes``)."""
        return b"".join([chunk async for chunk in self])


# -- translation at the httpx boundary ------------------------------------------------------

#: every httpx exception, most specific first, and what it means here
_HTTPX_ERRORS: tuple[tuple[type[Exception], str, bool], ...] = (
    (httpx.TimeoutException, "timeout", True),
    (httpx.UnsupportedProtocol, "invalid_url", False),
    (httpx.LocalProtocolError, "invalid_request", False),
    (httpx.RemoteProtocolError, "connection_error", True),
    (httpx.NetworkError, "connection_error", True),
    (httpx.ProxyError, "connection_error", True),
    (httpx.DecodingError, "invalid_response", True),
    (httpx.TooManyRedirects, "invalid_response", False),
    (httpx.HTTPStatusError, "invalid_response", False),
    (httpx.RequestError, "connection_error", True),  # TransportError and any new kind
    (httpx.HTTPError, "invalid_response", False),
    (httpx.InvalidURL, "invalid_url", False),
    (httpx.StreamError, "invalid_request", False),
    (httpx.CookieConflict, "invalid_request", False),
)


def translate_httpx_error(exc: Exception, method: str) -> SlackApiError:
    """The SlackApiError for an httpx exception (its message is not kept: it may hold a URL)."""
    for kind, error, retryable in _HTTPX_ERRORS:
        if isinstance(exc, kind):
            return SlackApiError(error, method=method, retryable=retryable)
    return SlackApiError("unexpected_http_error", method=method, retryable=False)


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


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:
        return None


async def _exactly(content: AsyncIterable[bytes], length: int
                   ) -> AsyncGenerator[bytes, None]:
    """``content``, checked to be exactly ``length`` bytes (else _LengthMismatch).

    A source left unfinished (too long, or the upload failed) is closed here.
    """
    sent = 0
    source = aiter(content)
    try:
        async for chunk in source:
            sent += len(chunk)
            if sent > length:
                raise _LengthMismatch
            yield bytes(chunk)
        if sent != length:
            raise _LengthMismatch
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()

