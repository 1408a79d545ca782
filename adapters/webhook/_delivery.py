"""Interlink's requests to the partner: signed POSTs with bounded retries.

One :meth:`Poster.post` sends one payload under one ``webhook-id`` (the same
on every attempt, so the partner can de-duplicate) and re-signs each attempt
with its own timestamp. What an answer means (the first rule that applies)::

    2xx                                    delivered; the body may carry {"id": ...}
    404                                    DeliveryError("unknown-user"), permanent
    410                                    DeliveryError("partner-gone"), permanent
    401                                    DeliveryError("partner-refused-signature"), permanent
    403                                    DeliveryError("partner-forbidden"), permanent
    408, 425, 429, 5xx                     retry (after Retry-After when given)
    any other status                       DeliveryError("partner-rejected:<status>"), permanent
    timeout                                retry ("partner-timeout")
    connection or protocol error           retry ("partner-unreachable")

Retries wait :class:`engine.Backoff` delays, or the partner's ``Retry-After``
(seconds or an HTTP date, capped at ``max_retry_after``). At most
``max_attempts`` attempts within ``delivery_budget`` seconds; then the last
transient reason is raised as a retryable :class:`engine.DeliveryError` (the
engine's session retries within its own window, then tells the sender).

A ``Retry-After`` is also remembered for the whole partner: until it has
passed, later deliveries wait for it (when it ends within their budget) or
fail at once as retryable, instead of knocking on a door that said "later".

Measurements (``adapter_stats``, the adapter's :class:`engine.AdapterStats`):
every 429 answer, and the seconds deliveries waited because the partner said
``Retry-After`` (before their retry, or held behind an earlier one); backoff
without a ``Retry-After`` is not a rate-limit wait.

Every httpx exception is translated here; nothing else leaves :meth:`post`
but :class:`engine.DeliveryError`. Logs carry webhook ids, statuses and
reasons, never bodies, URLs or secrets.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import cast

import httpx
import trio

from engine import AdapterStats, Backoff, DeliveryError

from ._signature import signature_headers

log = logging.getLogger("interlink.webhook.delivery")

#: most bytes of a partner's answer read (it may name its id for the message)
MAX_ANSWER_BYTES = 16 * 1024
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class DeliveryPolicy:
    #: seconds for one attempt (connect, send, answer)
    request_timeout: float = 10.0
    #: seconds for all attempts of one delivery together
    delivery_budget: float = 20.0
    max_attempts: int = 4
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=8.0))
    #: the longest Retry-After honoured (a longer one is capped to this)
    max_retry_after: float = 60.0


@dataclass
class DeliveryStats:
    posted: int = 0
    delivered: int = 0
    retries: int = 0
    failed: int = 0
    held_by_retry_after: int = 0


class Poster:
    def __init__(self, *, url: str, key: bytes, http: httpx.AsyncClient,
                 policy: DeliveryPolicy, wall_clock: Callable[[], float],
                 adapter_stats: AdapterStats | None = None) -> None:
        self.url = url
        self._key = key
        self._http = http
        self.policy = policy
        self._wall_clock = wall_clock
        #: trio time before which the partner asked not to be called (Retry-After)
        self._not_before = 0.0
        self.stats = DeliveryStats()
        #: the adapter's measurements (its own when none are given: read by nobody)
        self.adapter_stats = adapter_stats or AdapterStats("")

    async def post(self, webhook_id: str, body: bytes) -> bytes:
        """Deliver ``body``; the partner's answer (at most :data:`MAX_ANSWER_BYTES`)."""
        policy = self.policy
        deadline = trio.current_time() + policy.delivery_budget
        reason = "partner-unreachable"
        for attempt in range(1, policy.max_attempts + 1):
            now = trio.current_time()
            if self._not_before > now:
                if self._not_before > deadline:
                    self.stats.held_by_retry_after += 1
                    raise DeliveryError("partner-busy", retryable=True)
                try:
                    await trio.sleep_until(self._not_before)
                finally:
                    self.adapter_stats.add_rate_limit_wait(trio.current_time() - now)
            self.stats.posted += 1
            status, answer, retry_after = await self._attempt(webhook_id, body, deadline)
            if 200 <= status < 300:
                self.stats.delivered += 1
                return answer
            if status == 429:
                self.adapter_stats.count_rate_limited()
            if status:
                reason = f"partner-http-{status}"
                if status not in _RETRY_STATUSES and status < 500:
                    self.stats.failed += 1
                    log.info("webhook delivery refused by the partner", extra={
                        "webhook_id": webhook_id, "status": status})
                    raise DeliveryError(_permanent_reason(status), retryable=False)
            else:
                reason = answer.decode()
            if retry_after is not None:
                self._not_before = max(self._not_before, trio.current_time() + retry_after)
                wait = retry_after
            else:
                wait = policy.backoff.delay(attempt)
            if attempt == policy.max_attempts or trio.current_time() + wait > deadline:
                break
            self.stats.retries += 1
            log.info("webhook delivery will retry", extra={
                "webhook_id": webhook_id, "reason": reason, "attempt": attempt,
                "wait_s": round(wait, 3)})
            started = trio.current_time()
            try:
                await trio.sleep(wait)
            finally:
                if retry_after is not None:  # the partner's limit, not our backoff
                    self.adapter_stats.add_rate_limit_wait(trio.current_time() - started)
        self.stats.failed += 1
        log.warning("webhook delivery failed for now", extra={
            "webhook_id": webhook_id, "reason": reason})
        raise DeliveryError(reason, retryable=True)

    async def _attempt(self, webhook_id: str, body: bytes, deadline: float
                       ) -> tuple[int, bytes, float | None]:
        """``(status, answer, retry_after)``; status 0: no answer (the reason in ``answer``)."""
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            return 0, b"partner-timeout", None
        timeout = min(self.policy.request_timeout, remaining)
        headers = signature_headers(self._key, webhook_id, int(self._wall_clock()), body)
        headers["content-type"] = "application/json"
        try:
            with trio.fail_after(timeout):
                async with self._http.stream("POST", self.url, content=body, headers=headers,
                                             timeout=timeout) as response:
                    answer = await _read_bounded(response)
                    return (response.status_code, answer,
                            self._retry_after(response.headers.get("retry-after", "")))
        except (trio.TooSlowError, httpx.TimeoutException):
            return 0, b"partner-timeout", None
        except httpx.HTTPError as exc:
            log.info("webhook attempt failed", extra={"webhook_id": webhook_id,
                                                      "error": type(exc).__name__})
            return 0, b"partner-unreachable", None

    def _retry_after(self, value: str) -> float | None:
        """Seconds the partner asked to wait (capped), or ``None`` when it did not say."""
        value = value.strip()
        if not value:
            return None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                return None
            seconds = when.timestamp() - self._wall_clock()
        return min(max(seconds, 0.0), self.policy.max_retry_after)


def _permanent_reason(status: int) -> str:
    if status == 404:
        return "unknown-user"
    if status == 410:
        return "partner-gone"
    if status == 401:
        return "partner-refused-signature"
    if status == 403:
        return "partner-forbidden"
    return f"partner-rejected:{status}"


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # aiter_bytes is an async generator: close it when stopping early
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_bytes())) as body:
        async for chunk in body:
            chunks.append(chunk[:MAX_ANSWER_BYTES - size])
            size += len(chunk)
            if size >= MAX_ANSWER_BYTES:
                break
    return b"".join(chunks)
