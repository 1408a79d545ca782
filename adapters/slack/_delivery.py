"""Outbound: canonical events shown to Slack users, in private conversations.

The rules:

- Each session with a Slack user has a private conversation (``#ext-<contact>``:
  the bot and the user), created on first use and stored in the session at once
  (a later failure must not create a second one); creation is serialised per
  session. The user is invited (and the topic set) once per channel and process.
- An event with no session (a refusal, a contact request) goes to the session's
  conversation when there is one, else to the bot's DM with the user.
- ``encode_event`` (pure, in :mod:`._translate`) gives the Web API calls; they
  run under the contact's name and avatar (their last :class:`engine.Profile`).
  Errors a call lists as harmless (``already_reacted``...) count as done.
- Files a contact shares are streamed from their URL into Slack's upload flow
  (nothing on disk; no Slack token is sent to that URL).
- Presence becomes the conversation's topic, set only when it changes.
- Slack has no delivery receipts: ``delivered`` outcomes are not shown.
- A conversation that no longer exists for the bot (``channel_not_found``,
  ``is_archived``, ``not_in_channel``: deleted, archived, the app removed, or a
  Slack that forgot it) is forgotten in the session and a new one created; the
  event is tried once more there before the failure goes back to the sender.
- Posts are made once: each carries metadata naming its canonical event
  (:func:`._translate.post_metadata`), and the Web API client looks a post whose
  outcome is unknown up before posting it again (:mod:`._client`, rule 7). When
  even that cannot tell (``post_unconfirmed``), the first attempt's channel and
  time are kept in the directory beside the message-id map (message state), so
  every later delivery of that event — the session's retries, a redelivery after
  a restart — looks before it posts; found, or posted, the state is cleared.
  A post that stays unconfirmed through the session's retry window fails to the
  sender with ``post_unconfirmed``: it may have arrived; it was not posted twice.
- The same lookup makes a crash safe (``delivers_idempotently``): an event a
  crash interrupted that Slack delivers again (``EnginePort.may_have_delivered``)
  is looked up from its first acceptance before it is posted. A file share cannot
  be looked up (Slack's upload completion takes no metadata): redelivered so, it
  fails to its sender as possibly there already rather than arriving twice.
- Failures leave as :class:`engine.DeliveryError` (retryable or not); a token
  Slack refuses revokes its installation.
"""
from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, Iterable

import httpx
import msgspec
import trio

from engine import (
    Address,
    Bounded,
    DeliveryError,
    DeliveryOutcome,
    DeliveryResult,
    Event,
    FileShare,
    InvalidAddressError,
    Mention,
    PlatformIdentity,
    Presence,
    Profile,
    RichText,
    SessionRecord,
    Untranslatable,
    session_id_for,
)
from engine.richtext import Block, ListBlock, Paragraph, Quote

from ._errors import SlackApiError, UnconfirmedPost
from ._presence import PresencePart
from ._translate import (
    ApiCall,
    FileUpload,
    OutboundContext,
    Sender,
    encode_event,
    message_key,
    post_metadata,
)
from ._views import ChannelAnswer, Posted

log = logging.getLogger("interlink.slack")

_NAME_LIMIT = 80  # Slack's channel-name limit
_NAME_ATTEMPTS = 20
#: Slack's answers meaning "this conversation is gone for the bot": reopen it
CONVERSATION_GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel",
                               "channel_is_archived"})
#: message-state keys of a post whose outcome stayed unknown: where, and since when
#: (wall clock) to look for it before posting it again
UNCONFIRMED_CHANNEL = "unconfirmed_channel"
UNCONFIRMED_SINCE = "unconfirmed_since"


def conversation_name(prefix: str, contact: Address) -> str:
    """``ext-peter-widget-com``: Slack's rules (lowercase, a-z 0-9 - _, at most 80)."""
    slug = re.sub(r"[^a-z0-9_]+", "-", f"{contact.user}-{contact.domain}".lower()).strip("-")
    return (prefix + slug)[:_NAME_LIMIT - 4].rstrip("-")


class DeliveryPart(PresencePart):
    """Delivering canonical events to Slack users, and their private conversations."""

    #: a redelivered event is found where it was posted before (see the module's rules)
    delivers_idempotently = True

    _profiles: Bounded
    _topics: Bounded
    _invited: Bounded
    _conversation_locks: dict[str, trio.Lock]
    _files: httpx.AsyncClient | None
    _run_files: httpx.AsyncClient | None

    def _fetcher(self) -> httpx.AsyncClient:
        """The client that fetches files contacts share (any URL; no Slack token sent)."""
        client = self._files or self._run_files
        if client is None:
            raise DeliveryError("not-running", retryable=True)
        return client

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        try:
            return await self._deliver(event, session)
        except SlackApiError as exc:
            self.stats.delivery_failures += 1
            if exc.auth_failed:
                identity = self.port.directory.get_identity(event.destination)
                if identity is not None:
                    await self._revoke(identity.tenant, f"{exc.method}:{exc.error}")
            raise DeliveryError(exc.error, retryable=exc.retryable) from None
        except Untranslatable as exc:
            self.stats.delivery_failures += 1
            raise DeliveryError(exc.reason) from None

    async def find_delivered(self, event_id: str, session: SessionRecord,
                             since: float) -> str | None:
        """``engine.FindsDeliveries``: the message key of a post of ``event_id`` in the
        session's conversation since ``since``, found by its metadata (a thread reply
        is not looked for: not found). Raises :class:`engine.RemoteError` when Slack
        cannot be asked."""
        directory = self.port.directory
        channel = session.conversation_ids.get(self.name, "")
        identity = next((found for found in map(directory.get_identity, (session.a, session.b))
                         if found is not None and found.platform == self.name), None)
        if not channel or identity is None:
            return None
        ts = await self.web.find_post(channel=channel, metadata=post_metadata(event_id),
                                      token=self._bot_token(identity.tenant),
                                      team_id=identity.tenant, since=since)
        return None if ts is None else message_key(channel, ts)

    async def _deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        directory = self.port.directory
        if isinstance(event, Profile):
            self._profiles.remember(event.source, event)
            return DeliveryResult()
        if isinstance(event, DeliveryOutcome) and event.status == "delivered":
            # Slack has no delivery or read receipts: a contact's receipt (XEP-0184)
            # has no Slack form, and a bot notice per message would be noise
            return DeliveryResult()
        identity = directory.get_identity(event.destination)
        if identity is None or identity.platform != self.name:
            raise DeliveryError("unknown-address")
        if isinstance(event, FileShare) and \
                self.port.may_have_delivered(event.event_id) is not None:
            raise DeliveryError("engine restart; the file may have arrived before, "
                                "not sent again")
        token = self._bot_token(identity.tenant)
        self._follow(identity)
        known = session or directory.find_session(event.source, event.destination)
        if session is not None:
            channel = await self._conversation(session, identity, event.source, token)
        elif known is not None and known.conversation_ids.get(self.name):
            channel = known.conversation_ids[self.name]  # e.g. a refusal of a message there
        else:
            return await self._send(event, identity, await self._direct_channel(identity,
                                                                                token),
                                    token, in_session=False)
        try:
            return await self._send(event, identity, channel, token,
                                    in_session=session is not None)
        except SlackApiError as exc:
            if exc.error not in CONVERSATION_GONE or known is None:
                raise
            # gone for the bot: forget it, open a new one, and try once more there
            await self._forget_conversation(known.session_id, channel, identity, exc.error)
            contact = known.b if known.a == event.destination else known.a
            channel = await self._conversation(known, identity, contact, token)
            return await self._send(event, identity, channel, token,
                                    in_session=session is not None)

    async def _send(self, event: Event, identity: PlatformIdentity, channel: str, token: str,
                    *, in_session: bool) -> DeliveryResult:
        """The Web API calls of ``event`` into ``channel``."""
        if isinstance(event, Presence):
            return await self._show_presence(event, identity, channel, token)
        context = OutboundContext(
            channel=channel, sender=self._sender(event.source),
            message_keys=self._message_keys(event), user_ids=self._mentioned_ids(event))
        message_ts = ""
        for call in encode_event(event, context):
            if isinstance(call, FileUpload):
                message_ts = await self._upload(call, identity.tenant, token)
                continue
            answer = await self._call(call, identity.tenant, token, event_id=event.event_id)
            if call.result == "message":
                message_ts = answer.ts
        self.stats.deliveries += 1
        log.debug("slack delivered", extra={
            "kind": event.log_type, "event_id": event.event_id, "team_id": identity.tenant,
            "channel": channel, "destination": str(event.destination)})
        return DeliveryResult(
            platform_message_id=message_key(channel, message_ts) if message_ts else "",
            conversation_id=channel if in_session else "")

    async def _call(self, call: ApiCall, team_id: str, token: str, *,
                    event_id: str = "") -> Posted:
        try:
            if call.method == "chat.postMessage" and event_id and "metadata" in call.args:
                return await self._post_once(call, team_id, token, event_id)
            return await self.web.call(call.method, token=token, team_id=team_id,
                                       args=call.args, into=Posted)
        except SlackApiError as exc:
            if exc.error in call.harmless:
                return Posted(ok=True)
            raise

    async def _post_once(self, call: ApiCall, team_id: str, token: str,
                         event_id: str) -> Posted:
        """``call`` (a chat.postMessage showing ``event_id``), looked up first when an
        earlier delivery of the event left its outcome unknown (see the module's rules)."""
        directory = self.port.directory
        channel = str(call.args.get("channel") or "")
        state = directory.get_message_state(event_id, self.name)
        since: float | None = None
        if state.get(UNCONFIRMED_CHANNEL) == channel:  # the same conversation: look there
            try:
                since = float(state.get(UNCONFIRMED_SINCE, ""))
            except ValueError:
                since = None
        if since is None:  # redelivered after a crash that may have come after its post
            since = self.port.may_have_delivered(event_id)
        try:
            answer = await self.web.call(call.method, token=token, team_id=team_id,
                                         args=call.args, into=Posted,
                                         unconfirmed_since=since)
        except UnconfirmedPost as exc:
            log.warning("slack post unconfirmed; looked for again before any new post", extra={
                "event_id": event_id, "team_id": team_id, "channel": channel,
                "cause": exc.cause})
            if since is None:
                await directory.put_message_state(
                    event_id, self.name,
                    {UNCONFIRMED_CHANNEL: channel, UNCONFIRMED_SINCE: repr(exc.since)},
                    now=self.port.clock.now())
            raise
        if state:
            await directory.put_message_state(
                event_id, self.name, {UNCONFIRMED_CHANNEL: None, UNCONFIRMED_SINCE: None},
                now=self.port.clock.now())
        return answer

    async def _upload(self, upload: FileUpload, team_id: str, token: str) -> str:
        """Stream the file at ``upload.url`` into Slack's upload flow (nothing on disk)."""
        limit = self.web.settings.max_upload_bytes
        try:
            async with self._fetcher().stream("GET", upload.url, timeout=30.0) as response:
                if response.status_code != 200:
                    raise DeliveryError(f"file-fetch:http_{response.status_code}",
                                        retryable=response.status_code >= 500)
                declared = response.headers.get("content-length", "")
                content: AsyncIterable[bytes] | bytes
                if declared.isdigit():
                    length, content = int(declared), response.aiter_bytes()
                else:  # no length: Slack needs one up front, so read it (bounded)
                    content = await _read_bounded(response, limit)
                    length = len(content)
                if length > limit:
                    raise DeliveryError("file-too-large")
                file = await self.web.upload_file(
                    token=token, team_id=team_id, channel_id=upload.channel,
                    filename=upload.filename, content=content, length=length,
                    title=upload.title, initial_comment=upload.initial_comment,
                    thread_ts=upload.thread_ts)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"file-fetch:{type(exc).__name__}", retryable=True) from None
        return file.message_ts(upload.channel)

    async def _show_presence(self, event: Presence, identity: PlatformIdentity, channel: str,
                             token: str) -> DeliveryResult:
        context = OutboundContext(channel=channel, sender=self._sender(event.source))
        (call,) = encode_event(event, context)
        assert isinstance(call, ApiCall)
        if self._topics.get(channel) != call.args["topic"]:
            await self._call(call, identity.tenant, token)
            self._topics.remember(channel, call.args["topic"])
        return DeliveryResult(conversation_id=channel)

    def _sender(self, address: Address) -> Sender:
        profile = self._profiles.get(address)
        if isinstance(profile, Profile) and profile.name:
            return Sender(name=profile.name, icon_url=profile.avatar_url)
        return Sender(name=str(address))

    def _message_keys(self, event: Event) -> dict[str, str]:
        directory = self.port.directory
        wanted = [getattr(event, field, None)
                  for field in ("target_id", "thread_id", "reply_to")]
        keys: dict[str, str] = {}
        for canonical_id in wanted:
            if isinstance(canonical_id, str) and canonical_id:
                record = directory.get_message_ids(canonical_id)
                if record is not None and self.name in record.platform_ids:
                    keys[canonical_id] = record.platform_ids[self.name]
        return keys

    def _mentioned_ids(self, event: Event) -> dict[str, str]:
        body = getattr(event, "body", None)
        if not isinstance(body, RichText):
            return {}
        found: dict[str, str] = {}
        for mention in _mentions(body.blocks):
            try:
                identity = self.port.directory.get_identity(Address.parse(mention.address))
            except InvalidAddressError:
                continue
            if identity is not None and identity.platform == self.name:
                found[mention.address] = identity.user_id
        return found

    async def _conversation(self, session: SessionRecord, identity: PlatformIdentity,
                            contact: Address, token: str) -> str:
        """The session's private conversation, created (bot + user) on first use."""
        directory = self.port.directory
        lock = self._conversation_locks.setdefault(session.session_id, trio.Lock())
        try:
            async with lock:
                current = directory.get_session(session.session_id) or session
                channel = current.conversation_ids.get(self.name)
                if channel and channel not in self._invited:
                    try:  # first use in this process: the user is in it, it still exists
                        await self._invite(channel, identity, contact, token)
                    except SlackApiError as exc:
                        if exc.error not in CONVERSATION_GONE:
                            raise
                        current = await self._drop_conversation(current, channel, identity,
                                                                exc.error)
                        channel = ""
                if not channel:
                    channel = await self._create_conversation(identity, contact, token)
                    # stored at once: a failure below must not create a second channel
                    await directory.put_session(msgspec.structs.replace(
                        current, conversation_ids={**current.conversation_ids,
                                                   self.name: channel}))
                if channel not in self._invited:
                    await self._invite(channel, identity, contact, token)
                return channel
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._conversation_locks.pop(session.session_id, None)

    async def _forget_conversation(self, session_id: str, channel: str,
                                   identity: PlatformIdentity, error: str) -> None:
        """``channel`` is gone for the bot: the session forgets it (unless another
        delivery has already replaced it), so the next use creates a new one."""
        lock = self._conversation_locks.setdefault(session_id, trio.Lock())
        try:
            async with lock:
                current = self.port.directory.get_session(session_id)
                if current is not None:
                    await self._drop_conversation(current, channel, identity, error)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._conversation_locks.pop(session_id, None)

    async def _drop_conversation(self, current: SessionRecord, channel: str,
                                 identity: PlatformIdentity, error: str) -> SessionRecord:
        """Forget ``channel`` (call with the session's lock held); the updated session."""
        self._invited.pop(channel, None)
        self._topics.pop(channel, None)
        if current.conversation_ids.get(self.name) != channel:
            return current
        self.stats.conversations_reopened += 1
        log.warning("slack conversation gone; opening a new one", extra={
            "team_id": identity.tenant, "channel": channel, "user_id": identity.user_id,
            "error": error})
        updated = msgspec.structs.replace(current, conversation_ids={
            k: v for k, v in current.conversation_ids.items() if k != self.name})
        await self.port.directory.put_session(updated)
        return updated

    async def ensure_conversation(self, local: Address, contact: Address) -> str:
        """The private conversation of ``local`` with an accepted contact, checked with
        Slack and reopened if it is gone; the user is invited again (they may have left)."""
        directory = self.port.directory
        identity = directory.get_identity(local)
        session = directory.find_session(local, contact)
        if identity is None or identity.platform != self.name or session is None:
            return await self.open_conversation(local, contact)
        token = self._bot_token(identity.tenant)
        channel = session.conversation_ids.get(self.name)
        if channel:
            gone = ""
            try:
                info = await self.web.call("conversations.info", token=token,
                                           team_id=identity.tenant,
                                           args={"channel": channel}, into=ChannelAnswer)
                if info.channel is not None and info.channel.is_archived:
                    gone = "is_archived"
                elif info.channel is not None and info.channel.is_member is False:
                    gone = "not_in_channel"
            except SlackApiError as exc:
                if exc.error not in CONVERSATION_GONE:
                    raise
                gone = exc.error
            if gone:
                await self._forget_conversation(session.session_id, channel, identity, gone)
            else:
                self._invited.pop(channel, None)  # invite again: they may have left it
        return await self._conversation(session, identity, contact, token)

    async def _create_conversation(self, identity: PlatformIdentity, contact: Address,
                                   token: str) -> str:
        base = conversation_name(self.settings.conversation_prefix, contact)
        team_id = identity.tenant
        for attempt in range(_NAME_ATTEMPTS):
            name = base if attempt == 0 else f"{base}-{attempt + 1}"
            try:
                answer = await self.web.call("conversations.create", token=token,
                                             team_id=team_id,
                                             args={"name": name, "is_private": True},
                                             into=ChannelAnswer)
            except SlackApiError as exc:
                if exc.error == "name_taken":
                    continue
                raise
            channel = _channel_of(answer, "conversations.create")
            self.stats.conversations_created += 1
            log.info("slack conversation created", extra={
                "team_id": team_id, "channel": channel, "user_id": identity.user_id})
            return channel
        raise DeliveryError("conversation-name-exhausted")

    async def open_conversation(self, local: Address, contact: Address) -> str:
        """The private conversation of a Slack user with a contact, created if needed."""
        directory = self.port.directory
        identity = directory.get_identity(local)
        if identity is None or identity.platform != self.name:
            raise DeliveryError("unknown-address")
        session = directory.find_session(local, contact)
        if session is None:
            a, b = sorted((local, contact))
            session = SessionRecord(session_id=session_id_for(a, b), a=a, b=b,
                                    created_at=self.port.clock.now())
            await directory.put_session(session)
        return await self._conversation(session, identity, contact,
                                        self._bot_token(identity.tenant))

    async def _invite(self, channel: str, identity: PlatformIdentity, contact: Address,
                      token: str) -> None:
        """Make sure the Slack user is in the conversation (once per channel and process)."""
        team_id = identity.tenant
        try:
            await self.web.call("conversations.invite", token=token, team_id=team_id,
                                args={"channel": channel, "users": identity.user_id})
            await self.web.call("conversations.setTopic", token=token, team_id=team_id,
                                args={"channel": channel,
                                      "topic": f"Chat with {contact} through Interlink"})
        except SlackApiError as exc:
            if exc.error != "already_in_channel":
                raise
        self._invited.remember(channel, True)

    async def _direct_channel(self, identity: PlatformIdentity, token: str) -> str:
        """The bot's DM with the user: where notices without a session go."""
        answer = await self.web.call("conversations.open", token=token, team_id=identity.tenant,
                                     args={"users": identity.user_id}, into=ChannelAnswer)
        return _channel_of(answer, "conversations.open")


def _channel_of(answer: ChannelAnswer, method: str) -> str:
    if not answer.channel_id:  # ok, but no channel: not an answer Slack gives
        raise SlackApiError("invalid_response", method=method, retryable=False)
    return answer.channel_id


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise DeliveryError("file-too-large")
    return bytes(data)


def _mentions(blocks: Iterable[Block]) -> Iterable[Mention]:
    for block in blocks:
        if isinstance(block, Paragraph):
            yield from (i for i in block.inlines if isinstance(i, Mention))
        elif isinstance(block, Quote):
            yield from _mentions(block.blocks)
        elif isinstance(block, ListBlock):
            for item in block.items:
                yield from _mentions(item)
