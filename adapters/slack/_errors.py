"""Slack Web API errors: one exception, the tables that classify its codes, and the
translation of httpx's exceptions at the boundary.

Rules:

- Every failure of a Web API call, an upload or a download is a
  :class:`SlackApiError` carrying Slack's error code (or one of ours:
  ``http_<status>``, ``timeout``, ``connection_error``, ``invalid_response``...),
  the method, and ``retryable``.
- Retryable: the codes in :data:`TRANSIENT_ERRORS` and every HTTP 5xx; all
  else is permanent. :data:`AUTH_ERRORS` mean the token is no good.
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
