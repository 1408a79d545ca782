"""One Web API call: its arguments, its token, and what it needs (scopes, pages).

Handlers (``_chat``, ``_conversations``, ``_users``, ``_files``) receive a
:class:`Call` and return the answer's fields, or raise
:class:`~._state.SlackError`; ``_methods.call_method`` wraps them in Slack's
envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._state import (
    Change,
    Conversation,
    ConversationKind,
    Installation,
    SlackError,
    Token,
    TokenKind,
    World,
)

MAX_PAGE = 1000


@dataclass
class Outcome:
    """What one Web API call answers, and what it changed."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


class Args:
    """A call's arguments: query string, form fields or JSON, all by name.

    Form values are strings; JSON values may be any type. Booleans may be
    ``true``/``false``/``1``/``0``; lists may be comma-separated strings.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __contains__(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> Any:
        value = self._values.get(name)
        return None if value is None or value == "" else value

    def text(self, name: str, *, missing: str | None = None) -> str:
        """A required string; when absent the error is ``missing`` or invalid_arguments."""
        value = self.optional(name)
        if value is None:
            if missing is not None:
                raise SlackError(missing)
            raise invalid_arguments(f"missing required field: {name}")
        return value

    def optional(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, str):
            return value
        raise invalid_arguments(f"expected a string for field: {name}")

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes"):
            return True
        if text in ("0", "false", "no"):
            return False
        raise invalid_arguments(f"expected a boolean for field: {name}")

    def integer(self, name: str, default: int, *, error: str | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            raise SlackError(error) if error else invalid_arguments(f"expected an integer: {name}")
        try:
            return int(value)
        except (TypeError, ValueError):
            if error is not None:
                raise SlackError(error) from None
            raise invalid_arguments(f"expected an integer for field: {name}") from None

    def decoded(self, name: str, *, error: str) -> Any:
        """A JSON argument: already decoded (JSON bodies) or a JSON string (forms)."""
        value = self.raw(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError(error) from None

    def names(self, name: str) -> list[str]:
        """A list argument: a JSON list or a comma-separated string."""
        value = self.raw(name)
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        return [part.strip() for part in str(value).split(",") if part.strip()]


def invalid_arguments(message: str) -> SlackError:
    """``invalid_arguments`` with Slack's explanation in ``response_metadata.messages``."""
    return SlackError("invalid_arguments",
                      response_metadata={"messages": [f"[ERROR] {message}"]})


@dataclass
class Call:
    """One authenticated call: the world, the token, the arguments and the time."""

    world: World
    token: Token
    args: Args
    now: float
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return self.token.user_id

    @property
    def team(self) -> str:
        return self.token.team_id

    @property
    def is_bot(self) -> bool:
        return self.token.kind == "bot"

    @property
    def installation(self) -> Installation | None:
        if not self.token.app_id:
            return None
        return self.world.installation(self.token.app_id, self.team)

    @property
    def scopes(self) -> frozenset[str]:
        installation = self.installation
        if self.is_bot and installation is not None:
            return installation.scopes
        return self.token.scopes

    def need(self, *scopes: str) -> None:
        """Any one of ``scopes`` is required, or the call fails with ``missing_scope``."""
        if not any(scope in self.scopes for scope in scopes):
            raise SlackError("missing_scope", needed=",".join(scopes),
                             provided=",".join(sorted(self.scopes)))

    def need_for(self, conv: Conversation, table: Mapping[ConversationKind, str]) -> None:
        self.need(table[conv.kind])

    def conversation(self, name: str = "channel", *, missing: str = "channel_not_found"
                     ) -> Conversation:
        return self.world.conversation(self.token, self.args.text(name, missing=missing))

    def ts(self) -> str:
        return self.world.next_ts(self.now)


Handler = Callable[[Call], dict[str, Any]]


class MethodSpec(NamedTuple):
    handler: Handler
    tier: int
    #: token types allowed; app-level tokens only where listed
    tokens: frozenset[TokenKind] = frozenset({"user", "bot"})


# -- pagination ----------------------------------------------------------------------------

def page_limit(c: Call, default: int, *, error: str = "invalid_limit") -> int:
    limit = c.args.integer("limit", default, error=error)
    if limit < 0 or limit > MAX_PAGE:
        raise SlackError(error)
    return limit or default


def page_cursor(c: Call) -> str | None:
    cursor = c.args.optional("cursor")
    if cursor is None:
        return None
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise SlackError("invalid_cursor") from None
    kind, _, value = decoded.partition(":")
    if kind != "next" or not value:
        raise SlackError("invalid_cursor")
    return value


def next_cursor(value: str) -> str:
    return base64.b64encode(f"next:{value}".encode()).decode()


def paginate(items: list[Any], key: Callable[[Any], str], c: Call, default: int
             ) -> tuple[list[Any], str]:
    """Slice ``items`` (in listing order) after the cursor; (page, next cursor or "")."""
    limit = page_limit(c, default)
    after = page_cursor(c)
    start = 0
    if after is not None:
        keys = [key(item) for item in items]
        if after not in keys:
            raise SlackError("invalid_cursor")
        start = keys.index(after) + 1
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, next_cursor(key(page[-1])) if more and page else ""
