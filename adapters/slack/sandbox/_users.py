"""users.*, team.info and bots.info: people, profiles, presence, the workspace."""

from __future__ import annotations

from typing import Any

from ._call import Call, paginate
from ._render import profile_json, user_json
from ._state import SlackError, UserChanged


def users_info(c: Call) -> dict[str, Any]:
    c.need("users:read")
    user = c.world.user(c.args.text("user", missing="user_not_found"), c.team)
    data = user_json(c.world, user, email="users:read.email" in c.scopes)
    if c.args.flag("include_locale"):
        data["locale"] = "en-US"
    return {"user": data}


def users_list(c: Call) -> dict[str, Any]:
    c.need("users:read")
    people = c.world.people(c.team)
    limit = c.args.integer("limit", 0, error="invalid_limit")
    if limit < 0:
        raise SlackError("invalid_limit")
    page, cursor = paginate(people, lambda u: u.id, c, limit or len(people) or 1)
    email = "users:read.email" in c.scopes
    return {"members": [user_json(c.world, u, email=email) for u in page],
            "cache_ts": int(c.now), "response_metadata": {"next_cursor": cursor}}


def users_lookup_by_email(c: Call) -> dict[str, Any]:
    c.need("users:read.email")
    email = c.args.text("email", missing="users_not_found")
    user = c.world.user_by_email(email, c.team)
    if user is None:
        raise SlackError("users_not_found")
    return {"user": user_json(c.world, user, email=True)}


def users_profile_get(c: Call) -> dict[str, Any]:
    c.need("users.profile:read")
    user = c.world.user(c.args.optional("user") or c.actor, c.team)
    email = "users:read.email" in c.scopes or user.id == c.actor
    profile = profile_json(c.world, user, email=email)
    profile["fields"] = {}
    return {"profile": profile}


_PROFILE_FIELDS = ("real_name", "display_name", "title", "phone", "status_text",
                   "status_emoji", "first_name", "last_name", "email")


def users_profile_set(c: Call) -> dict[str, Any]:
    c.need("users.profile:write")
    if c.token.kind != "user":
        raise SlackError("not_allowed_token_type")
    actor = c.world.users[c.actor]
    target = c.world.user(c.args.optional("user") or c.actor, c.team)
    if target.id != actor.id and not actor.is_admin:
        raise SlackError("not_admin")
    changes: dict[str, Any] = {}
    profile = c.args.decoded("profile", error="invalid_profile")
    if profile is not None:
        if not isinstance(profile, dict):
            raise SlackError("invalid_profile")
        changes.update(profile)
    name = c.args.optional("name")
    if name is not None:
        changes[name] = c.args.optional("value") or ""
    if not changes:
        raise SlackError("invalid_profile")
    for key, value in changes.items():
        if key not in _PROFILE_FIELDS:
            continue
        if not isinstance(value, str):
            raise SlackError("invalid_profile")
        if key in ("real_name", "display_name") and len(value) > 80:
            raise SlackError("invalid_name_maxlength")
        if key == "status_text" and len(value) > 100:
            raise SlackError("too_long")
        if key == "email" and (not actor.is_admin or "@" not in value):
            raise SlackError("not_admin" if not actor.is_admin else "invalid_email")
    for key, value in changes.items():
        if key in _PROFILE_FIELDS:
            setattr(target, key, value)
    if "real_name" in changes and "first_name" not in changes:
        first, _, last = target.real_name.partition(" ")
        target.first_name, target.last_name = first, last
    target.updated = int(c.now)
    c.changes.append(UserChanged(team_id=c.team, event_ts=c.ts(), user=target.id))
    profile_out = profile_json(c.world, target, email=True)
    return {"profile": profile_out, "username": target.name}


def users_get_presence(c: Call) -> dict[str, Any]:
    c.need("users:read")
    user = c.world.user(c.args.optional("user") or c.actor, c.team)
    body: dict[str, Any] = {"presence": user.effective_presence}
    if user.id == c.actor:
        body.update({"online": user.effective_presence == "active",
                     "auto_away": user.presence == "away" and not user.manual_away,
                     "manual_away": user.manual_away,
                     "connection_count": 1 if user.effective_presence == "active" else 0,
                     "last_activity": int(c.now)})
    return body


def users_set_presence(c: Call) -> dict[str, Any]:
    c.need("users:write")
    presence = c.args.text("presence", missing="invalid_presence")
    if presence not in ("auto", "away"):
        raise SlackError("invalid_presence")
    c.world.users[c.actor].manual_away = presence == "away"
    return {}




def team_info(c: Call) -> dict[str, Any]:
    c.need("team:read")
    team = c.args.optional("team") or c.team
    if team != c.team:
        raise SlackError("team_not_found")
    ws = c.world.workspaces[team]
    return {"team": {"id": ws.id, "name": ws.name, "domain": ws.domain,
                     "email_domain": ws.email_domain,
                     "icon": {"image_default": True},
                     "url": f"https://{ws.domain}.slack.com/"}}


def bots_info(c: Call) -> dict[str, Any]:
    c.need("users:read")
    bot_id = c.args.text("bot", missing="bot_not_found")
    for installation in c.world.installations_in(c.team):
        if installation.bot_id == bot_id:
            user = c.world.users[installation.bot_user_id]
            app = c.world.apps[installation.app_id]
            return {"bot": {"id": bot_id, "deleted": False, "name": app.name,
                            "updated": user.updated, "app_id": app.id,
                            "user_id": user.id,
                            "icons": {"image_36": "", "image_48": "", "image_72": ""}}}
    raise SlackError("bot_not_found")
