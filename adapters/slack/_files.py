"""Files over the Web API: uploads (files upload v2) and ``url_private`` downloads.

Rules:

- An upload is files.getUploadURLExternal, then exactly ``length`` bytes to its
  ``upload_url`` (streamed; no token goes there, as with slack-sdk), then
  files.completeUploadExternal. More than ``max_upload_bytes``, or a stream
  longer or shorter than declared, is refused (``file_too_large`` /
  ``length_mismatch``). Bytes are retried on transient failures within the
  client's attempts and window; a stream cannot be replayed, so its failure is
  raised (``retryable=True``) for the caller to start over.
- A download sends the bot token only to the API's own origin and to
  ``download_hosts`` over https (``untrusted_url`` otherwise). A redirect,
  401, 403 or an HTML page (Slack's sign-in) is ``file_access_denied``; 404
  ``file_not_found``; more than ``max_download_bytes`` ``file_too_large``.
  Opening is retried on transient failures; reading is not.

:class:`FileTransfers` is mixed into :class:`._client.SlackWebClient`, whose
``call``, settings, HTTP client and counters it uses.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from ._errors import SlackApiError, translate_httpx_error
from ._views import Answer, UploadCompleted, UploadedFile, UploadUrl

A = TypeVar("A", bound=Answer)

if TYPE_CHECKING:
    from ._client import WebApiSettings

log = logging.getLogger("interlink.slack.webapi")


class _LengthMismatch(Exception):
    pass


class FileTransfers:
    """Uploads and downloads; a part of :class:`._client.SlackWebClient`."""

    settings: WebApiSettings
    _http: httpx.AsyncClient
    _origin: tuple[str, str]
    _retries: int
    _backoff_waited: float

    if TYPE_CHECKING:  # provided by SlackWebClient, which this part is mixed into
        async def call(self, method: str, *, token: str, team_id: str,
                       args: Mapping[str, Any] | None = None, into: type[A]) -> A: ...

        def _backoff(self, attempts: int) -> float: ...

    async def upload_file(self, *, token: str, team_id: str, channel_id: str, filename: str,
                          content: AsyncIterable[bytes] | bytes, length: int, title: str = "",
                          initial_comment: str = "", thread_ts: str | None = None
                          ) -> UploadedFile:
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
                              args={"filename": filename, "length": length}, into=UploadUrl)
        if not got.upload_url or not got.file_id:
            raise SlackApiError("invalid_response", method=step, retryable=False)
        await self._upload_bytes(got.upload_url, content, length)
        args: dict[str, Any] = {"files": [{"id": got.file_id, "title": title or filename}],
                                "channel_id": channel_id}
        if initial_comment:
            args["initial_comment"] = initial_comment
        if thread_ts:
            args["thread_ts"] = thread_ts
        done = await self.call("files.completeUploadExternal", token=token, team_id=team_id,
                               args=args, into=UploadCompleted)
        if not done.files:
            raise SlackApiError("invalid_response", method="files.completeUploadExternal",
                                retryable=False)
        return done.files[0]

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
