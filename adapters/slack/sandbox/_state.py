"""The sandbox's world: workspaces, people, conversations, messages, files and tokens.

Pure state and rules; no I/O, no clock (callers pass ``now``, seconds since
the epoch). The Web API handlers in ``_methods`` read and change a
:class:`World`; each change they make is also recorded as a :data:`Change`,
from which ``_events`` builds what Slack would send to apps.

The rules, as Slack applies them:

- A token acts as one user: a person (user token, ``xoxp-``) or an app's bot
  user (bot token, ``xoxb-``). App-level tokens (``xapp-``) only open Socket
  Mode connections. Tokens can be revoked, and rotated tokens expire.
- Public channels are visible to everyone in their workspace; private
  channels, DMs and group DMs only to their members. Something a token cannot
  see is reported as ``channel_not_found``, never as forbidden.
- Posting needs membership, except that bots holding ``chat:write.public`` may
  post to public channels they are not in.
- Only the author edits or deletes a message; workspace admins may delete
  anyone's. Replies belong to their thread's root: a reply to a reply joins
  the root's thread.
- A message's ``ts`` is unique and increasing per workspace; edits carry the
  editor and the time of the edit.
- Only apps post message metadata (``event_type`` and ``event_payload``); it is
  shown by the Web API only to those who ask for it (``include_all_metadata``)
  and to the poster in its answer, never in events.
- Only members see a channel's history, except that people may read public
  channels they are not in.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import msgspec

from ._seed import DEFAULT_USER_SCOPES, Seed, SeedApp

ConversationKind = Literal["public", "private", "im", "mpim"]
TokenKind = Literal["user", "bot", "app"]


class SlackError(Exception):
    """A Slack error answer: ``{"ok": false, "error": code, **extra}`` with HTTP ``status``."""

    def __init__(self, error: str, *, status: int = 200, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.extra}


# -- records -----------------------------------------------------------------------------------

class Workspace(msgspec.Struct, kw_only=True):
    id: str
    name: str
    domain: str
    email_domain: str = ""


class User(msgspec.Struct, kw_only=True):
    id: str
    team_id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    email: str = ""
    title: str = ""
    phone: str = ""
    avatar_url: str = ""
    first_name: str = ""
    last_name: str = ""
    #: automatic presence; ``manual_away`` (users.setPresence) overrides it
    presence: Literal["active", "away"] = "active"
    manual_away: bool = False
    status_text: str = ""
    status_emoji: str = ""
    tz: str = "UTC"
    tz_label: str = "Coordinated Universal Time"
    tz_offset: int = 0
    is_admin: bool = False
    is_bot: bool = False
    app_id: str = ""
    bot_id: str = ""
    deleted: bool = False
    updated: int = 0

    @property
    def effective_presence(self) -> str:
        return "away" if self.manual_away else self.presence


class Topic(msgspec.Struct, kw_only=True):
    value: str = ""
    creator: str = ""
    last_set: int = 0


class Conversation(msgspec.Struct, kw_only=True):
    id: str
    team_id: str
    kind: ConversationKind
    name: str = ""
    created: int = 0
    creator: str = ""
    members: list[str] = msgspec.field(default_factory=list)
    topic: Topic = msgspec.field(default_factory=Topic)
    purpose: Topic = msgspec.field(default_factory=Topic)
    is_general: bool = False
    is_archived: bool = False

    @property
    def is_channel_like(self) -> bool:
        return self.kind in ("public", "private")

    @property
    def legacy_group(self) -> bool:
        """A private channel with a ``G`` id (created before March 2021)."""
        return self.kind == "private" and self.id.startswith("G")


class Edited(msgspec.Struct, kw_only=True):
    user: str
    ts: str


class Reaction(msgspec.Struct, kw_only=True):
    name: str
    users: list[str] = msgspec.field(default_factory=list)


class Message(msgspec.Struct, kw_only=True):
    ts: str
    channel: str
    team: str
    #: the author: a person, or an app's bot user
    user: str
    text: str = ""
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None
    #: None, "bot_message", "file_share", "thread_broadcast" or "tombstone"
    subtype: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    username: str | None = None
    icons: dict[str, str] | None = None
    thread_ts: str | None = None
    parent_user_id: str | None = None
    replies: list[str] = msgspec.field(default_factory=list)
    edited: Edited | None = None
    reactions: list[Reaction] = msgspec.field(default_factory=list)
    files: list[str] = msgspec.field(default_factory=list)
    client_msg_id: str | None = None
    #: an app's message metadata: ``{"event_type": str, "event_payload": {...}}``
    metadata: dict[str, Any] | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


class FileShare(msgspec.Struct, kw_only=True):
    channel: str
    ts: str


class File(msgspec.Struct, kw_only=True):
    id: str
    team_id: str
    user: str
    name: str
    title: str
    mimetype: str
    filetype: str
    pretty_type: str
    declared_size: int
    created: int
    alt_txt: str = ""
    snippet_type: str = ""
    content: bytes | None = None
    completed: bool = False
    bot_id: str | None = None
    shares: list[FileShare] = msgspec.field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else self.declared_size


class Ephemeral(msgspec.Struct, kw_only=True):
    """A message only one person sees (chat.postEphemeral, slash command answers)."""

    channel: str
    user: str
    ts: str
    text: str = ""
    blocks: list[Any] | None = None
    author: str = ""
    app_id: str | None = None
    bot_id: str | None = None


class Token(msgspec.Struct, kw_only=True):
    value: str
    kind: TokenKind
    team_id: str = ""
    user_id: str = ""
    app_id: str = ""
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None
    revoked: bool = False


class RefreshToken(msgspec.Struct, kw_only=True):
    value: str
    kind: Literal["bot", "user"]
    app_id: str
    team_id: str
    user_id: str
    scopes: frozenset[str]
    revoked: bool = False


class App(msgspec.Struct, kw_only=True):
    id: str
    name: str
    signing_secret: str
    verification_token: str
    app_token: str = ""
    request_url: str = ""
    events: frozenset[str] | None = None
    commands: tuple[str, ...] = ()
    client_id: str = ""
    client_secret: str = ""
    redirect_urls: tuple[str, ...] = ()
    token_rotation: bool = False
    token_expires_in: int = 43200

    @property
    def socket_mode(self) -> bool:
        return not self.request_url


class Installation(msgspec.Struct, kw_only=True):
    app_id: str
    team_id: str
    bot_user_id: str
    bot_id: str
    scopes: frozenset[str]


class OAuthCode(msgspec.Struct, kw_only=True):
    code: str
    app_id: str
    team_id: str
    user_id: str
    scopes: frozenset[str]
    user_scopes: frozenset[str]
    redirect_uri: str
    expires_at: float
    used: bool = False


class SocketTicket(msgspec.Struct, kw_only=True):
    ticket: str
    app_id: str
    expires_at: float


class ResponseUrl(msgspec.Struct, kw_only=True):
    """A slash command's ``response_url``: up to 5 uses in 30 minutes."""

    key: str
    app_id: str
    team_id: str
    channel: str
    user: str
    uses_left: int
    expires_at: float


# -- changes: facts from which events are built -------------------------------------------------

class _Change(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    team_id: str
    event_ts: str


class MessagePosted(_Change, frozen=True, kw_only=True, tag="message_posted"):
    channel: str
    ts: str


class MessageEdited(_Change, frozen=True, kw_only=True, tag="message_edited"):
    channel: str
    ts: str
    previous: Message


class MessageDeleted(_Change, frozen=True, kw_only=True, tag="message_deleted"):
    channel: str
    previous: Message


class ReactionChanged(_Change, frozen=True, kw_only=True, tag="reaction_changed"):
    added: bool
    channel: str
    ts: str
    user: str
    reaction: str
    item_user: str


class MemberJoined(_Change, frozen=True, kw_only=True, tag="member_joined"):
    channel: str
    user: str
    inviter: str = ""


class MemberLeft(_Change, frozen=True, kw_only=True, tag="member_left"):
    channel: str
    user: str


class UserChanged(_Change, frozen=True, kw_only=True, tag="user_changed"):
    user: str


class AppHomeOpened(_Change, frozen=True, kw_only=True, tag="app_home_opened"):
    app_id: str
    user: str
    channel: str
    tab: str


class FileShared(_Change, frozen=True, kw_only=True, tag="file_shared"):
    file_id: str
    channel: str
    user: str


class TokensRevoked(_Change, frozen=True, kw_only=True, tag="tokens_revoked"):
    app_id: str
    users: tuple[str, ...] = ()
    bots: tuple[str, ...] = ()


Change = (MessagePosted | MessageEdited | MessageDeleted | ReactionChanged | MemberJoined
          | MemberLeft | UserChanged | AppHomeOpened | FileShared | TokensRevoked)

HISTORY_SCOPES: dict[ConversationKind, str] = {
    "public": "channels:history", "private": "groups:history", "im": "im:history",
    "mpim": "mpim:history"}
READ_SCOPES: dict[ConversationKind, str] = {
    "public": "channels:read", "private": "groups:read", "im": "im:read", "mpim": "mpim:read"}
CHANNEL_TYPES: dict[ConversationKind, str] = {
    "public": "channel", "private": "group", "im": "im", "mpim": "mpim"}

_TS = re.compile(r"^\d{1,12}\.\d{6}$")
_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def valid_ts(value: str) -> bool:
    return bool(_TS.match(value))


def default_verification_token(app_id: str) -> str:
    return hashlib.sha256(f"verification:{app_id}".encode()).hexdigest()[:24]


class World:
    """Everything the sandbox knows; every rule that is not argument parsing."""

    def __init__(self, seed: Seed, *, now: float, first_event_id: int = 1) -> None:
        self.source = seed.source
        #: the sandbox's own URL, for URLs it hands out (set once the server has bound)
        self.base_url = "http://127.0.0.1"
        self.max_upload_bytes = 50 * 1024 * 1024
        self.workspaces: dict[str, Workspace] = {}
        self.users: dict[str, User] = {}
        self.conversations: dict[str, Conversation] = {}
        #: per conversation: ts -> message, in ts order (kept sorted on insert)
        self.messages: dict[str, dict[str, Message]] = {}
        self.files: dict[str, File] = {}
        self.ephemerals: list[Ephemeral] = []
        self.apps: dict[str, App] = {}
        self.installations: dict[tuple[str, str], Installation] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.oauth_codes: dict[str, OAuthCode] = {}
        self.socket_tickets: dict[str, SocketTicket] = {}
        self.response_urls: dict[str, ResponseUrl] = {}
        #: upload ticket -> file id (files.getUploadURLExternal)
        self.upload_tickets: dict[str, str] = {}
        self._last_ts_us = 0
        self._counters: dict[str, Iterator[int]] = {"Ev": itertools.count(first_event_id)}
        created = int(now)
        for ws in seed.workspace:
            self.workspaces[ws.id] = Workspace(id=ws.id, name=ws.name, domain=ws.domain,
                                               email_domain=ws.email_domain)
            for su in ws.user:
                first, _, last = su.real_name.partition(" ")
                self.users[su.id] = User(
                    id=su.id, team_id=ws.id, name=su.name, real_name=su.real_name or su.name,
                    display_name=su.display_name, email=su.email, title=su.title,
                    phone=su.phone, avatar_url=su.avatar_url, first_name=first, last_name=last,
                    presence=su.presence, status_text=su.status_text,
                    status_emoji=su.status_emoji, tz=su.tz, tz_label=su.tz_label,
                    tz_offset=su.tz_offset, is_admin=su.is_admin, updated=created)
                if su.token:
                    scopes = su.scopes if su.scopes is not None else DEFAULT_USER_SCOPES
                    self.tokens[su.token] = Token(value=su.token, kind="user", team_id=ws.id,
                                                  user_id=su.id, scopes=frozenset(scopes))
            for sa in ws.app:
                self._seed_app(sa, ws.id, created)
            for sc in ws.channel:
                members = list(dict.fromkeys(sc.members))
                creator = sc.creator or (members[0] if members else "")
                self.conversations[sc.id] = Conversation(
                    id=sc.id, team_id=ws.id, kind="private" if sc.is_private else "public",
                    name=sc.name, created=created, creator=creator, members=members,
                    topic=Topic(value=sc.topic, creator=creator if sc.topic else "",
                                last_set=created if sc.topic else 0),
                    purpose=Topic(value=sc.purpose, creator=creator if sc.purpose else "",
                                  last_set=created if sc.purpose else 0),
                    is_general=sc.is_general)
                self.messages[sc.id] = {}

    def _seed_app(self, sa: SeedApp, team_id: str, created: int) -> None:
        if sa.id not in self.apps:
            self.apps[sa.id] = App(
                id=sa.id, name=sa.name or sa.id, signing_secret=sa.signing_secret,
                verification_token=sa.verification_token or default_verification_token(sa.id),
                app_token=sa.app_token, request_url=sa.request_url,
                events=frozenset(sa.events) if sa.events is not None else None,
                commands=tuple(sa.commands), client_id=sa.client_id,
                client_secret=sa.client_secret, redirect_urls=tuple(sa.redirect_urls),
                token_rotation=sa.token_rotation, token_expires_in=sa.token_expires_in)
            if sa.app_token:
                self.tokens[sa.app_token] = Token(value=sa.app_token, kind="app", app_id=sa.id,
                                                  scopes=frozenset({"connections:write"}))
        bot_id = sa.bot_id or "B" + sa.id[1:]
        app = self.apps[sa.id]
        self.users[sa.bot_user_id] = User(
            id=sa.bot_user_id, team_id=team_id, name=sa.bot_name or _bot_name(app.name),
            real_name=app.name, is_bot=True, app_id=sa.id, bot_id=bot_id, updated=created)
        self.installations[(sa.id, team_id)] = Installation(
            app_id=sa.id, team_id=team_id, bot_user_id=sa.bot_user_id, bot_id=bot_id,
            scopes=frozenset(sa.scopes))
        if sa.bot_token:
            self.tokens[sa.bot_token] = Token(value=sa.bot_token, kind="bot", team_id=team_id,
                                              user_id=sa.bot_user_id, app_id=sa.id,
                                              scopes=frozenset(sa.scopes))

    def prune(self, now: float) -> None:
        """Forget expired one-time credentials (socket tickets, OAuth codes, response URLs)."""
        for table in (self.socket_tickets, self.oauth_codes, self.response_urls):
            for key in [k for k, v in table.items() if v.expires_at <= now]:
                del table[key]

    # -- ids and timestamps ---------------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        """A fresh, deterministic id such as ``C0000001A``: prefix + 8 characters."""
        counter = self._counters.setdefault(prefix, itertools.count(1))
        n, digits = next(counter), []
        for _ in range(8):
            n, r = divmod(n, len(_ALPHABET))
            digits.append(_ALPHABET[r])
        candidate = prefix + "".join(reversed(digits))
        taken = (self.users, self.conversations, self.files, self.workspaces, self.apps)
        if any(candidate in table for table in taken):
            return self.next_id(prefix)
        return candidate

    def next_ts(self, now: float) -> str:
        """A message timestamp: strictly increasing, ``"1767225600.000001"``."""
        us = max(int(now * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    @staticmethod
    def new_secret(prefix: str, team_id: str = "") -> str:
        body = f"{team_id}-{secrets.token_hex(6)}-{secrets.token_urlsafe(18)}" if team_id \
            else secrets.token_urlsafe(24)
        return prefix + body

    # -- tokens -----------------------------------------------------------------------------------
    def authenticate(self, value: str, now: float) -> Token:
        """The token behind ``value``, or the error Slack answers for it."""
        if not value:
            raise SlackError("not_authed")
        token = self.tokens.get(value)
        if token is None:
            raise SlackError("invalid_auth")
        if token.revoked:
            raise SlackError("token_revoked")
        if token.expires_at is not None and now >= token.expires_at:
            raise SlackError("token_expired")
        if token.kind != "app":
            user = self.users.get(token.user_id)
            if user is None or user.deleted:
                raise SlackError("account_inactive")
        return token

    def revoke(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None or token.revoked:
            return None
        token.revoked = True
        return token

    def issue_token(self, *, kind: Literal["bot", "user"], app: App, team_id: str,
                    user_id: str, scopes: frozenset[str], now: float
                    ) -> tuple[Token, RefreshToken | None]:
        """A new access token (and, for rotating apps, a refresh token)."""
        prefix = "xoxb-" if kind == "bot" else "xoxp-"
        if app.token_rotation:
            value = self.new_secret("xoxe." + prefix, team_id)
            token = Token(value=value, kind=kind, team_id=team_id, user_id=user_id,
                          app_id=app.id, scopes=scopes, expires_at=now + app.token_expires_in)
            refresh = RefreshToken(value=self.new_secret("xoxe-1-"), kind=kind, app_id=app.id,
                                   team_id=team_id, user_id=user_id, scopes=scopes)
            self.refresh_tokens[refresh.value] = refresh
        else:
            value = self.new_secret(prefix, team_id)
            token = Token(value=value, kind=kind, team_id=team_id, user_id=user_id,
                          app_id=app.id, scopes=scopes)
            refresh = None
        self.tokens[token.value] = token
        return token, refresh

    def tokens_of(self, app_id: str, team_id: str) -> list[Token]:
        return [t for t in self.tokens.values()
                if t.app_id == app_id and t.team_id == team_id and not t.revoked]

    # -- people -----------------------------------------------------------------------------------
    def user(self, user_id: str, team_id: str) -> User:
        user = self.users.get(user_id)
        if user is None or user.team_id != team_id:
            raise SlackError("user_not_found")
        return user

    def people(self, team_id: str) -> list[User]:
        return [u for u in self.users.values() if u.team_id == team_id]

    def user_by_email(self, email: str, team_id: str) -> User | None:
        wanted = email.strip().lower()
        for user in self.people(team_id):
            if user.email and user.email.lower() == wanted and not user.deleted:
                return user
        return None

    def installation_of_bot(self, user_id: str) -> Installation | None:
        for installation in self.installations.values():
            if installation.bot_user_id == user_id:
                return installation
        return None

    def installations_in(self, team_id: str) -> list[Installation]:
        return [i for i in self.installations.values() if i.team_id == team_id]

    # -- conversations -----------------------------------------------------------------------------
    def can_see(self, user_id: str, conv: Conversation) -> bool:
        user = self.users.get(user_id)
        if user is None or user.team_id != conv.team_id:
            return False
        return conv.kind == "public" or user_id in conv.members

    def conversation(self, token: Token, ref: str) -> Conversation:
        """A conversation the token's user can see, by id, or ``channel_not_found``."""
        conv = self.conversations.get(ref)
        if conv is None or not self.can_see(token.user_id, conv):
            raise SlackError("channel_not_found")
        return conv

    def conversation_by_name(self, team_id: str, name: str) -> Conversation | None:
        for conv in self.conversations.values():
            if conv.team_id == team_id and conv.is_channel_like and conv.name == name:
                return conv
        return None

    def find_dm(self, team_id: str, users: Iterable[str]) -> Conversation | None:
        wanted = set(users)
        kind = "im" if len(wanted) <= 2 else "mpim"
        for conv in self.conversations.values():
            if conv.team_id == team_id and conv.kind == kind and set(conv.members) == wanted:
                return conv
        return None

    def open_dm(self, team_id: str, users: list[str], now: float) -> tuple[Conversation, bool]:
        """The DM (2 people, or someone and themself) or group DM of ``users``; created?"""
        found = self.find_dm(team_id, users)
        if found is not None:
            return found, False
        members = list(dict.fromkeys(users))
        if len(members) <= 2:
            conv = Conversation(id=self.next_id("D"), team_id=team_id, kind="im",
                                created=int(now), creator=members[0], members=members)
        else:
            name = "mpdm-" + "--".join(self.users[u].name for u in members) + "-1"
            conv = Conversation(id=self.next_id("C"), team_id=team_id, kind="mpim", name=name,
                                created=int(now), creator=members[0], members=members)
        self.conversations[conv.id] = conv
        self.messages[conv.id] = {}
        return conv, True

    def create_channel(self, team_id: str, name: str, private: bool, creator: str,
                       now: float) -> Conversation:
        conv = Conversation(id=self.next_id("C"), team_id=team_id,
                            kind="private" if private else "public", name=name,
                            created=int(now), creator=creator, members=[creator])
        self.conversations[conv.id] = conv
        self.messages[conv.id] = {}
        return conv

    def conversations_of(self, team_id: str) -> list[Conversation]:
        return [c for c in self.conversations.values() if c.team_id == team_id]

    # -- messages ---------------------------------------------------------------------------------
    def message(self, channel: str, ts: str) -> Message:
        found = self.messages.get(channel, {}).get(ts)
        if found is None:
            raise SlackError("message_not_found")
        return found

    def add_message(self, message: Message) -> None:
        log = self.messages.setdefault(message.channel, {})
        log[message.ts] = message  # ts only grow, so insertion order is ts order
        if message.thread_ts is not None and message.thread_ts != message.ts:
            root = log[message.thread_ts]
            root.thread_ts = root.ts
            root.replies.append(message.ts)

    def remove_message(self, message: Message) -> None:
        log = self.messages[message.channel]
        if message.is_reply:
            root = log.get(message.thread_ts or "")
            if root is not None and message.ts in root.replies:
                root.replies.remove(message.ts)
                if root.subtype == "tombstone" and not root.replies:
                    del log[root.ts]
        if message.replies:
            message.subtype = "tombstone"
            message.text = "This message was deleted."
            message.blocks = message.attachments = None
            message.files = []
            message.reactions = []
        else:
            del log[message.ts]

    def thread_root(self, channel: str, ts: str) -> Message:
        message = self.messages.get(channel, {}).get(ts)
        if message is None:
            raise SlackError("thread_not_found")
        if message.is_reply:
            return self.messages[channel][message.thread_ts or ""]
        return message

    def reply_users(self, root: Message) -> list[str]:
        log = self.messages[root.channel]
        return list(dict.fromkeys(log[ts].user for ts in root.replies if ts in log))

    # -- apps -------------------------------------------------------------------------------------
    def installation(self, app_id: str, team_id: str) -> Installation | None:
        return self.installations.get((app_id, team_id))

    def app_for_client(self, client_id: str) -> App | None:
        for app in self.apps.values():
            if app.client_id and app.client_id == client_id:
                return app
        return None

    def install(self, app: App, team_id: str, scopes: frozenset[str], now: float
                ) -> Installation:
        """Install (or re-install with more scopes) ``app`` in ``team_id``."""
        found = self.installations.get((app.id, team_id))
        if found is not None:
            found.scopes = found.scopes | scopes
            return found
        bot_user = self.next_id("U")
        bot_id = self.next_id("B")
        self.users[bot_user] = User(id=bot_user, team_id=team_id, name=_bot_name(app.name),
                                    real_name=app.name, is_bot=True, app_id=app.id,
                                    bot_id=bot_id, updated=int(now))
        installation = Installation(app_id=app.id, team_id=team_id, bot_user_id=bot_user,
                                    bot_id=bot_id, scopes=scopes)
        self.installations[(app.id, team_id)] = installation
        return installation


def _bot_name(app_name: str) -> str:
    name = re.sub(r"[^a-z0-9_\-]+", "-", app_name.lower()).strip("-")
    return name or "bot"
