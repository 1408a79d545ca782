"""The Web API: :func:`call_method` and the table of methods.

:func:`call_method` authenticates the token, checks the token type, applies
the rate limit and runs the method's handler, and answers with Slack's JSON
(``{"ok": true, ...}``, or ``{"ok": false, "error": code}``) plus the state
changes the call made, from which ``_events`` builds events. Arguments,
scopes, tiers and error codes follow the method specs in
``shared/reference/slack-api/methods``. Handlers are pure functions over the
:class:`~._state.World`, grouped by family: ``_chat``, ``_conversations``,
``_users``, ``_files``; OAuth is in ``_oauth``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ._call import Args, Call, MethodSpec, Outcome
from ._chat import (
    chat_delete,
    chat_post_ephemeral,
    chat_post_message,
    chat_update,
    reactions_add,
    reactions_remove,
)
from ._conversations import (
    conversations_create,
    conversations_history,
    conversations_info,
    conversations_invite,
    conversations_join,
    conversations_kick,
    conversations_leave,
    conversations_list,
    conversations_members,
    conversations_open,
    conversations_replies,
    conversations_set_topic,
)
from ._files import files_complete_upload_external, files_get_upload_url_external, files_info
from ._oauth import oauth_v2_access
from ._ratelimit import SPECIAL, RateLimiter, retry_after_header
from ._state import SlackError, SocketTicket, TokensRevoked, World
from ._users import (
    bots_info,
    team_info,
    users_get_presence,
    users_info,
    users_list,
    users_lookup_by_email,
    users_profile_get,
    users_profile_set,
    users_set_presence,
)

SOCKET_TICKET_LIFETIME = 60.0


# -- the entry point ---------------------------------------------------------------------------

def call_method(world: World, limiter: RateLimiter, method: str, token_value: str,
                args: Mapping[str, Any], now: float, *,
                basic_auth: tuple[str, str] | None = None) -> Outcome:
    """Run Web API ``method``; never raises for bad input (it becomes Slack's answer)."""
    if method == "oauth.v2.access":
        try:
            return Outcome(ok(oauth_v2_access(world, Args(args), now, basic_auth)))
        except SlackError as exc:
            return Outcome(exc.body(), status=exc.status)
    spec = METHODS.get(method)
    if spec is None:
        return Outcome({"ok": False, "error": "unknown_method"}, status=404)
    try:
        token = world.authenticate(token_value, now)
        if token.kind not in spec.tokens:
            raise SlackError("not_allowed_token_type")
        subject = token.app_id or f"person:{token.user_id}"
        wait = limiter.check((subject, token.team_id, method), spec.tier)
        if wait is None and method == "chat.postMessage":
            wait = limiter.check_post_message((subject, token.team_id),
                                              Args(args).optional("channel") or "")
        if wait is not None:
            raise SlackError("ratelimited", status=429,
                             headers={"Retry-After": retry_after_header(wait)})
        call = Call(world, token, Args(args), now)
        body = spec.handler(call)
    except SlackError as exc:
        return Outcome(exc.body(), status=exc.status, headers=exc.headers)
    if call.warnings:
        body["warning"] = ",".join(call.warnings)
        body.setdefault("response_metadata", {})["warnings"] = list(call.warnings)
    headers = {"X-OAuth-Scopes": ",".join(sorted(call.scopes))}
    return Outcome(ok(body), headers=headers, changes=call.changes)


def ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, **body}



# -- auth and apps -----------------------------------------------------------------------------

def auth_test(c: Call) -> dict[str, Any]:
    world = c.world
    if c.token.kind == "app":
        return {"app_id": c.token.app_id}
    ws = world.workspaces[c.team]
    user = world.users[c.actor]
    body: dict[str, Any] = {"url": f"https://{ws.domain}.slack.com/", "team": ws.name,
                            "user": user.name, "team_id": ws.id, "user_id": user.id,
                            "is_enterprise_install": False}
    if c.is_bot:
        body["bot_id"] = user.bot_id
    if c.token.expires_at is not None:
        body["expires_in"] = max(0, int(c.token.expires_at - c.now))
    return body


def auth_revoke(c: Call) -> dict[str, Any]:
    if c.args.flag("test"):
        return {"revoked": False}
    c.world.revoke(c.token.value)
    if c.token.app_id and c.token.kind != "app":
        users = (c.actor,) if c.token.kind == "user" else ()
        bots = (c.actor,) if c.token.kind == "bot" else ()
        c.changes.append(TokensRevoked(team_id=c.team, event_ts=c.ts(), app_id=c.token.app_id,
                                       users=users, bots=bots))
    return {"revoked": True}


def apps_connections_open(c: Call) -> dict[str, Any]:
    app = c.world.apps[c.token.app_id]
    if not app.socket_mode:
        raise SlackError("socket_mode_not_enabled")
    c.world.prune(c.now)
    ticket = uuid.uuid4().hex
    c.world.socket_tickets[ticket] = SocketTicket(ticket=ticket, app_id=app.id,
                                                  expires_at=c.now + SOCKET_TICKET_LIFETIME)
    base = c.world.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return {"url": f"{base}/link/?{urlencode({'ticket': ticket, 'app_id': app.id})}"}



METHODS: dict[str, MethodSpec] = {
    "apps.connections.open": MethodSpec(apps_connections_open, 3, frozenset({"app"})),
    "auth.revoke": MethodSpec(auth_revoke, 3),
    "auth.test": MethodSpec(auth_test, SPECIAL, frozenset({"user", "bot", "app"})),
    "bots.info": MethodSpec(bots_info, 3),
    "chat.delete": MethodSpec(chat_delete, 3),
    "chat.postEphemeral": MethodSpec(chat_post_ephemeral, 4),
    "chat.postMessage": MethodSpec(chat_post_message, SPECIAL),
    "chat.update": MethodSpec(chat_update, 3),
    "conversations.create": MethodSpec(conversations_create, 2),
    "conversations.history": MethodSpec(conversations_history, 3),
    "conversations.info": MethodSpec(conversations_info, 3),
    "conversations.invite": MethodSpec(conversations_invite, 3),
    "conversations.join": MethodSpec(conversations_join, 3),
    "conversations.kick": MethodSpec(conversations_kick, 3),
    "conversations.leave": MethodSpec(conversations_leave, 3),
    "conversations.list": MethodSpec(conversations_list, 2),
    "conversations.members": MethodSpec(conversations_members, 4),
    "conversations.open": MethodSpec(conversations_open, 3),
    "conversations.replies": MethodSpec(conversations_replies, 3),
    "conversations.setTopic": MethodSpec(conversations_set_topic, 2),
    "files.completeUploadExternal": MethodSpec(files_complete_upload_external, 4),
    "files.getUploadURLExternal": MethodSpec(files_get_upload_url_external, 4),
    "files.info": MethodSpec(files_info, 4),
    "reactions.add": MethodSpec(reactions_add, 3),
    "reactions.remove": MethodSpec(reactions_remove, 2),
    "team.info": MethodSpec(team_info, 3),
    "users.getPresence": MethodSpec(users_get_presence, 3),
    "users.info": MethodSpec(users_info, 4),
    "users.list": MethodSpec(users_list, 2),
    "users.lookupByEmail": MethodSpec(users_lookup_by_email, 3),
    "users.profile.get": MethodSpec(users_profile_get, 4),
    "users.profile.set": MethodSpec(users_profile_set, 3),
    "users.setPresence": MethodSpec(users_set_presence, 2),
}
