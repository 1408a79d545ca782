"""Slack Web API errors: one exception, the tables that classify its codes, and the
translation of httpx's exceptions at the boundary.

Rules:

- Every failure of a Web API call, an upload or a download is a
  :class:`SlackApiError` carrying Slack's error code (or one of ours:
  ``http_<status>``, ``timeout``, ``connection_error``, ``invalid_response``...),
  the method, and ``retryable``.
- Retryable: the codes in :data:`TRANSIENT_ERRORS` and every HTTP 5xx; all
  else is permanent. :data:`AUTH_ERRORS` mean the token is no good.
- An *unknown outcome* (:attr:`SlackApiError.outcome_unknown`): the call may
  have taken effect although no ok answer came back — no answer in time, a
  dropped connection, an unreadable answer, any HTTP 5xx, and Slack's
  ``internal_error`` / ``fatal_error`` ("some aspect of the operation" may
  have succeeded). A request that never left (no connection made) is not one.
  Repeating such a ``chat.postMessage`` could post twice: the client looks
  first, and when it cannot tell, raises :class:`UnconfirmedPost`.
- httpx exceptions are translated here and only here
  (:func:`translate_httpx_error`); their messages are dropped (they may hold a
  URL with a token), and an httpx exception type not in the table still maps.
"""
from __future__ import annotations

import httpx

from engine import RemoteError

TRANSIENT_ERRORS: frozenset[str] = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "ratelimited", "team_added_to_org",
    "timeout", "connection_error", "invalid_response", "post_unconfirmed",
})

#: error codes after which the call may have been done all the same (its answer was
#: lost, unreadable, or Slack's own "it's possible some aspect of the operation
#: succeeded"); every HTTP 5xx too
UNKNOWN_OUTCOME_ERRORS: frozenset[str] = frozenset({
    "timeout", "connection_error", "invalid_response", "internal_error", "fatal_error",
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
    ``invalid_request``, ``post_unconfirmed`` (:class:`UnconfirmedPost`).
    ``retryable`` says whether the same call may succeed later (the session's own
    retry decides when); ``needed`` is the scope a ``missing_scope`` asked for;
    ``retry_after`` the seconds Slack asked to wait; ``status`` the HTTP status, when
    there was one; ``unsent`` that the request never left (no connection was made).
    """

    def __init__(self, error: str, *, method: str, retryable: bool | None = None,
                 needed: str | None = None, retry_after: float | None = None,
                 status: int | None = None, unsent: bool = False) -> None:
        super().__init__(f"{method}: {error}")
        self.error = error
        self.method = method
        self.retryable = is_transient(error) if retryable is None else retryable
        self.needed = needed
        self.retry_after = retry_after
        self.status = status
        self.unsent = unsent

    @property
    def auth_failed(self) -> bool:
        """The token is revoked, expired or otherwise no longer accepted."""
        return self.error in AUTH_ERRORS

    @property
    def outcome_unknown(self) -> bool:
        """The call may have been done although it failed (see the module's rules)."""
        if self.unsent:
            return False
        return self.error in UNKNOWN_OUTCOME_ERRORS or (self.status or 0) >= 500 or (
            self.error.startswith("http_5") and len(self.error) == 8)


class UnconfirmedPost(SlackApiError):
    """A ``chat.postMessage`` whose outcome stayed unknown: an attempt may have posted
    it, and looking for it failed (``cause``: the lookup's error code) or could not
    read far enough (``lookup_incomplete``). Retryable unless the lookup's error is
    permanent; ``since`` is the wall-clock time (Unix seconds) of the post's first
    attempt, from which a later lookup must search."""

    def __init__(self, *, since: float, cause: str, retryable: bool = True) -> None:
        super().__init__("post_unconfirmed", method="chat.postMessage", retryable=retryable)
        self.since = since
        self.cause = cause



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


#: httpx exceptions raised before the request left: it cannot have been done
_UNSENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                        httpx.PoolTimeout, httpx.UnsupportedProtocol,
                                        httpx.LocalProtocolError, httpx.InvalidURL)


def translate_httpx_error(exc: Exception, method: str) -> SlackApiError:
    """The SlackApiError for an httpx exception (its message is not kept: it may hold a URL)."""
    unsent = isinstance(exc, _UNSENT)
    for kind, error, retryable in _HTTPX_ERRORS:
        if isinstance(exc, kind):
            return SlackApiError(error, method=method, retryable=retryable, unsent=unsent)
    return SlackApiError("unexpected_http_error", method=method, retryable=False)
