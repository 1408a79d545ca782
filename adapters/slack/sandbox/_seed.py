"""The sandbox's seed: one TOML file decoded into msgspec Structs.

A seed describes workspaces, their users, channels and installed apps. Unknown
keys are errors (a typo must not fall back to a default) and every error names
the file, the field path and what was expected, e.g.::

    seed.toml: Expected `str`, got `int` - at `$.workspace[0].user[1].email`

The format is documented in ``docs/slack-sandbox.md``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from engine import ConfigError

from ._ratelimit import RateLimitTable

#: Scopes the sandbox knows. A seed naming another scope is refused: a typo
#: (``chat.write``) must not silently leave an app without permissions.
KNOWN_SCOPES: frozenset[str] = frozenset({
    "admin", "app_mentions:read", "bookmarks:read", "bookmarks:write", "calls:read",
    "calls:write", "canvases:read", "canvases:write", "channels:history", "channels:join",
    "channels:manage", "channels:read", "channels:write", "channels:write.invites",
    "channels:write.topic", "chat:write", "chat:write.customize", "chat:write.public",
    "commands", "connections:write", "dnd:read", "dnd:write", "email", "emoji:read",
    "files:read", "files:write", "groups:history", "groups:read", "groups:write",
    "groups:write.invites", "groups:write.topic", "identify", "im:history", "im:read",
    "im:write", "im:write.topic", "incoming-webhook", "links:read", "links:write",
    "metadata.message:read", "mpim:history", "mpim:read", "mpim:write", "mpim:write.topic",
    "openid", "pins:read", "pins:write", "profile", "reactions:read", "reactions:write",
    "reminders:read", "reminders:write", "remote_files:read", "remote_files:share",
    "remote_files:write", "search:read", "stars:read", "stars:write", "team:read",
    "usergroups:read", "usergroups:write", "users.profile:read", "users.profile:write",
    "users:read", "users:read.email", "users:write",
})

#: Scopes a seeded user token has when the seed does not list them: what a
#: person can do in the Slack client.
DEFAULT_USER_SCOPES: tuple[str, ...] = (
    "channels:history", "channels:read", "channels:write", "channels:write.invites",
    "channels:write.topic", "chat:write", "files:read", "files:write", "groups:history",
    "groups:read", "groups:write", "groups:write.invites", "groups:write.topic", "identify",
    "im:history", "im:read", "im:write", "im:write.topic", "mpim:history", "mpim:read",
    "mpim:write", "mpim:write.topic", "reactions:read", "reactions:write", "team:read",
    "users.profile:read", "users.profile:write", "users:read", "users:read.email",
    "users:write",
)

#: Bot events an app can subscribe to (``events = [...]`` in the seed).
KNOWN_EVENTS: frozenset[str] = frozenset({
    "message.channels", "message.groups", "message.im", "message.mpim", "reaction_added",
    "reaction_removed", "member_joined_channel", "member_left_channel", "user_change",
    "app_home_opened", "file_shared", "tokens_revoked",
})

_ID = {
    "workspace": re.compile(r"^T[A-Z0-9]{2,20}$"),
    "user": re.compile(r"^[UW][A-Z0-9]{2,20}$"),
    "channel": re.compile(r"^[CG][A-Z0-9]{2,20}$"),
    "app": re.compile(r"^A[A-Z0-9]{2,20}$"),
    "bot": re.compile(r"^B[A-Z0-9]{2,20}$"),
}
_CHANNEL_NAME = re.compile(r"^[a-z0-9_\-]{1,80}$")
_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9\-]{0,20}$")
_COMMAND = re.compile(r"^/[a-z0-9_\-]{1,31}$")


class _Entry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SeedUser(_Entry, frozen=True, kw_only=True):
    """A person in a workspace (``[[workspace.user]]``)."""

    id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    email: str = ""
    title: str = ""
    phone: str = ""
    avatar_url: str = ""
    presence: Literal["active", "away"] = "active"
    status_text: str = ""
    status_emoji: str = ""
    tz: str = "UTC"
    tz_label: str = "Coordinated Universal Time"
    tz_offset: int = 0
    is_admin: bool = False
    #: a user token (``xoxp-…``) so tests can act as this person through the Web API
    token: str = ""
    #: that token's scopes; default: :data:`DEFAULT_USER_SCOPES`
    scopes: list[str] | None = None


class SeedChannel(_Entry, frozen=True, kw_only=True):
    """A public or private channel (``[[workspace.channel]]``)."""

    id: str
    name: str
    is_private: bool = False
    is_general: bool = False
    #: user ids, people or bot users of this workspace's apps
    members: list[str] = msgspec.field(default_factory=list)
    topic: str = ""
    purpose: str = ""
    #: a user id; default: the first member
    creator: str = ""


class SeedApp(_Entry, frozen=True, kw_only=True):
    """An app installed in a workspace (``[[workspace.app]]``).

    The same app may be listed in several workspaces (one installation each);
    its app-level fields must then be equal everywhere.
    """

    id: str
    name: str = ""
    bot_user_id: str
    bot_id: str = ""
    bot_name: str = ""
    bot_token: str = ""
    #: app-level token for Socket Mode (``xapp-…``)
    app_token: str = ""
    signing_secret: str
    #: the deprecated verification token sent in envelopes; default derived from the id
    verification_token: str = ""
    #: where events and slash commands are POSTed; leave out for Socket Mode
    request_url: str = ""
    scopes: list[str] = msgspec.field(default_factory=list)
    #: bot events subscribed to; default: every event the scopes allow
    events: list[str] | None = None
    #: slash commands the app declares, e.g. ``["/interlink"]``
    commands: list[str] = msgspec.field(default_factory=list)
    client_id: str = ""
    client_secret: str = ""
    redirect_urls: list[str] = msgspec.field(default_factory=list)
    token_rotation: bool = False
    token_expires_in: int = 43200


class SeedWorkspace(_Entry, frozen=True, kw_only=True):
    """A Slack workspace (``[[workspace]]``)."""

    id: str
    name: str
    domain: str
    email_domain: str = ""
    user: list[SeedUser] = msgspec.field(default_factory=list)
    channel: list[SeedChannel] = msgspec.field(default_factory=list)
    app: list[SeedApp] = msgspec.field(default_factory=list)


class Seed(_Entry, frozen=True, kw_only=True):
    """A whole seed file."""

    workspace: list[SeedWorkspace]
    #: ``[rate_limits]``: the limits to apply (Slack's when absent); the standalone
    #: server uses them, an engine's ``[sandbox] rate_limits`` table replaces them
    rate_limits: RateLimitTable | None = None
    #: where the seed came from (a path, or a name given to :func:`parse_seed`)
    source: str = "<seed>"


def load_seed(path: str | Path) -> Seed:
    """Read and validate a seed file; raise :class:`ConfigError` saying what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_seed(text, source=str(path))


def parse_seed(text: str, *, source: str = "<seed>") -> Seed:
    """Validate seed TOML ``text``; errors name ``source``, the field path and the rule."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if "source" in raw:
        raise ConfigError(f"{source}: `source` is set by the sandbox, not in the file - at "
                          "`$.source`")
    if "workspace" not in raw:
        raise ConfigError(f"{source}: at least one [[workspace]] is required - at "
                          "`$.workspace`")
    raw["source"] = source
    try:
        seed = msgspec.convert(raw, Seed)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _Checker(seed).check()
    return seed


class _Checker:
    """Rules a seed must follow beyond its types; remembers ids and tokens seen."""

    def __init__(self, seed: Seed) -> None:
        self.seed = seed
        self.ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.apps: dict[str, tuple[SeedApp, str]] = {}

    def fail(self, message: str, where: str) -> ConfigError:
        return ConfigError(f"{self.seed.source}: {message} - at `{where}`")

    def unique_id(self, value: str, kind: str, where: str) -> None:
        if not _ID[kind].match(value):
            first = {"workspace": "T", "user": "U or W", "channel": "C or G", "app": "A",
                     "bot": "B"}[kind]
            raise self.fail(f"expected a {kind} id: {first} then 2-20 upper-case letters or "
                            f"digits, got {value!r}", where)
        if value in self.ids:
            raise self.fail(f"id {value!r} is already used at `{self.ids[value]}`", where)
        self.ids[value] = where

    def unique_token(self, value: str, prefix: str, where: str) -> None:
        if not value:
            return
        if not value.startswith(prefix) or len(value) <= len(prefix):
            raise self.fail(f"expected a token starting with {prefix!r}", where)
        if value in self.tokens:
            raise self.fail(f"token is already used at `{self.tokens[value]}`", where)
        self.tokens[value] = where

    def scopes(self, values: list[str], where: str) -> None:
        for k, scope in enumerate(values):
            if scope not in KNOWN_SCOPES:
                raise self.fail(f"unknown scope {scope!r}", f"{where}[{k}]")

    def url(self, value: str, where: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(f"expected an http(s) URL, got {value!r}", where)

    def check(self) -> None:
        if not self.seed.workspace:
            raise self.fail("at least one [[workspace]] is required", "$.workspace")
        for i, ws in enumerate(self.seed.workspace):
            self.workspace(ws, f"$.workspace[{i}]")

    def workspace(self, ws: SeedWorkspace, at: str) -> None:
        self.unique_id(ws.id, "workspace", f"{at}.id")
        if not ws.name.strip():
            raise self.fail("a workspace needs a name", f"{at}.name")
        if not _DOMAIN.match(ws.domain):
            raise self.fail("expected a domain of lower-case letters, digits and hyphens "
                            f"(acme for acme.slack.com), got {ws.domain!r}", f"{at}.domain")
        names: dict[str, str] = {}
        emails: dict[str, str] = {}
        members_ok: set[str] = set()
        for j, user in enumerate(ws.user):
            uat = f"{at}.user[{j}]"
            self.unique_id(user.id, "user", f"{uat}.id")
            if not user.name or user.name != user.name.lower() or " " in user.name:
                raise self.fail("expected a lower-case user name without spaces", f"{uat}.name")
            if user.name in names:
                raise self.fail(f"user name {user.name!r} is already used at "
                                f"`{names[user.name]}`", f"{uat}.name")
            names[user.name] = f"{uat}.name"
            if user.email:
                if "@" not in user.email.strip("@"):
                    raise self.fail(f"expected an email address, got {user.email!r}",
                                    f"{uat}.email")
                if user.email.lower() in emails:
                    raise self.fail(f"email is already used at `{emails[user.email.lower()]}`",
                                    f"{uat}.email")
                emails[user.email.lower()] = f"{uat}.email"
            self.unique_token(user.token, "xoxp-", f"{uat}.token")
            if user.scopes is not None:
                self.scopes(user.scopes, f"{uat}.scopes")
            members_ok.add(user.id)
        for j, app in enumerate(ws.app):
            self.app(app, f"{at}.app[{j}]")
            members_ok.add(app.bot_user_id)
        channel_names: dict[str, str] = {}
        for j, channel in enumerate(ws.channel):
            cat = f"{at}.channel[{j}]"
            self.unique_id(channel.id, "channel", f"{cat}.id")
            if not _CHANNEL_NAME.match(channel.name):
                raise self.fail("expected a channel name of at most 80 lower-case letters, "
                                f"digits, hyphens and underscores, got {channel.name!r}",
                                f"{cat}.name")
            if channel.name in channel_names:
                raise self.fail(f"channel name {channel.name!r} is already used at "
                                f"`{channel_names[channel.name]}`", f"{cat}.name")
            channel_names[channel.name] = f"{cat}.name"
            for k, member in enumerate(channel.members):
                if member not in members_ok:
                    raise self.fail(f"{member!r} is not a user or bot user of workspace "
                                    f"{ws.id}", f"{cat}.members[{k}]")
            if channel.creator and channel.creator not in members_ok:
                raise self.fail(f"{channel.creator!r} is not a user of workspace {ws.id}",
                                f"{cat}.creator")
            if len(channel.topic) > 250:
                raise self.fail("a topic has at most 250 characters", f"{cat}.topic")

    def app(self, app: SeedApp, at: str) -> None:
        if app.id in self.apps:
            first, first_at = self.apps[app.id]
            for field in ("name", "app_token", "signing_secret", "verification_token",
                          "request_url", "client_id", "client_secret", "redirect_urls",
                          "token_rotation", "token_expires_in", "commands", "events"):
                if getattr(first, field) != getattr(app, field):
                    raise self.fail(f"app {app.id} is also listed at `{first_at}` with a "
                                    f"different {field}; app-level fields must be equal in "
                                    "every workspace", f"{at}.{field}")
        else:
            if not _ID["app"].match(app.id):
                raise self.fail("expected an app id: A then 2-20 upper-case letters or "
                                f"digits, got {app.id!r}", f"{at}.id")
            self.unique_token(app.app_token, "xapp-", f"{at}.app_token")
            self.apps[app.id] = (app, at)
        self.unique_id(app.bot_user_id, "user", f"{at}.bot_user_id")
        if app.bot_id:
            self.unique_id(app.bot_id, "bot", f"{at}.bot_id")
        self.unique_token(app.bot_token, "xoxb-", f"{at}.bot_token")
        if not app.signing_secret:
            raise self.fail("an app needs a signing secret", f"{at}.signing_secret")
        if app.request_url:
            self.url(app.request_url, f"{at}.request_url")
        elif not app.app_token:
            raise self.fail("an app without a request_url uses Socket Mode and needs an "
                            "app_token (xapp-…)", f"{at}.app_token")
        self.scopes(app.scopes, f"{at}.scopes")
        for k, event in enumerate(app.events or []):
            if event not in KNOWN_EVENTS:
                raise self.fail(f"unknown event {event!r}; known: "
                                f"{', '.join(sorted(KNOWN_EVENTS))}", f"{at}.events[{k}]")
        for k, command in enumerate(app.commands):
            if not _COMMAND.match(command):
                raise self.fail(f"expected a slash command such as '/interlink', got "
                                f"{command!r}", f"{at}.commands[{k}]")
        if app.commands and "commands" not in app.scopes:
            raise self.fail("an app with slash commands needs the 'commands' scope",
                            f"{at}.scopes")
        if bool(app.client_id) != bool(app.client_secret):
            raise self.fail("client_id and client_secret go together (OAuth install flow)",
                            f"{at}.client_secret" if app.client_id else f"{at}.client_id")
        for k, url in enumerate(app.redirect_urls):
            self.url(url, f"{at}.redirect_urls[{k}]")
        if app.token_expires_in < 60:
            raise self.fail("tokens live at least 60 seconds", f"{at}.token_expires_in")
