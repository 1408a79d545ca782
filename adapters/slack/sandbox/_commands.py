"""What a person does in the Slack client that the Web API cannot: sandbox-only operations.

Running a slash command (what Slack sends the app, and what becomes of the
app's answer or later ``response_url`` posts) and opening an app's Home tab.
The server exposes these under ``/sandbox/`` and ``/commands/``.
"""

from __future__ import annotations

import secrets
from typing import Any, NamedTuple

from ._call import invalid_arguments
from ._chat import MAX_TEXT
from ._state import (
    App,
    AppHomeOpened,
    Change,
    Conversation,
    Ephemeral,
    Installation,
    Message,
    MessagePosted,
    ResponseUrl,
    SlackError,
    Token,
    World,
)

RESPONSE_URL_LIFETIME = 1800.0
RESPONSE_URL_USES = 5


class PreparedCommand(NamedTuple):
    app: App
    installation: Installation
    channel: Conversation
    user: str
    #: the form fields Slack sends (as a dict; form-encoded over HTTP)
    payload: dict[str, str]


def prepare_command(world: World, token: Token, command: str, text: str, channel_ref: str,
                    now: float) -> PreparedCommand:
    """A person types ``command text`` in a conversation: what Slack sends the app."""
    if token.kind != "user":
        raise SlackError("not_allowed_token_type")
    user = world.users[token.user_id]
    conv = world.conversation(token, channel_ref) if channel_ref else None
    if conv is None:
        raise SlackError("channel_not_found")
    for installation in world.installations_in(token.team_id):
        app = world.apps[installation.app_id]
        if command in app.commands and "commands" in installation.scopes:
            break
    else:
        raise SlackError("unknown_command")
    ws = world.workspaces[token.team_id]
    world.prune(now)
    key = secrets.token_urlsafe(18)
    world.response_urls[key] = ResponseUrl(key=key, app_id=app.id, team_id=ws.id,
                                           channel=conv.id, user=user.id,
                                           uses_left=RESPONSE_URL_USES,
                                           expires_at=now + RESPONSE_URL_LIFETIME)
    payload = {
        "token": app.verification_token, "team_id": ws.id, "team_domain": ws.domain,
        "channel_id": conv.id,
        "channel_name": conv.name if conv.is_channel_like else (
            "directmessage" if conv.kind == "im" else "mpdm"),
        "user_id": user.id, "user_name": user.name, "command": command, "text": text,
        "api_app_id": app.id, "is_enterprise_install": "false",
        "response_url": f"{world.base_url}/commands/{ws.id}/{key}",
        "trigger_id": f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**11)}."
                      f"{secrets.token_hex(16)}",
    }
    return PreparedCommand(app, installation, conv, user.id, payload)


def apply_response(world: World, app_id: str, team_id: str, channel: str, user: str,
                   response: Any, now: float) -> list[Change]:
    """An app's answer to a command (ack body, or a POST to ``response_url``)."""
    if response is None or response == "" or response == {}:
        return []
    if isinstance(response, str):
        response = {"text": response}
    if not isinstance(response, dict):
        raise SlackError("invalid_payload")
    installation = world.installation(app_id, team_id)
    if installation is None:
        raise SlackError("invalid_payload")
    text = response.get("text") or ""
    blocks = response.get("blocks")
    if not isinstance(text, str) or (blocks is not None and not isinstance(blocks, list)):
        raise SlackError("invalid_payload")
    if len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    mine = [e for e in world.ephemerals if e.app_id == app_id and e.user == user
            and e.channel == channel]
    if response.get("delete_original") and mine:
        world.ephemerals.remove(mine[-1])
        return []
    if not text and not blocks:
        return []
    if response.get("response_type") == "in_channel":
        message = Message(ts=world.next_ts(now), channel=channel, team=team_id,
                          user=installation.bot_user_id, text=text, blocks=blocks,
                          bot_id=installation.bot_id, app_id=app_id)
        world.add_message(message)
        return [MessagePosted(team_id=team_id, event_ts=message.ts, channel=channel,
                              ts=message.ts)]
    if response.get("replace_original") and mine:
        mine[-1].text, mine[-1].blocks = text, blocks
        return []
    world.ephemerals.append(Ephemeral(channel=channel, user=user, ts=world.next_ts(now),
                                      text=text, blocks=blocks,
                                      author=installation.bot_user_id, app_id=app_id,
                                      bot_id=installation.bot_id))
    return []


def use_response_url(world: World, key: str, now: float) -> ResponseUrl:
    found = world.response_urls.get(key)
    if found is None or now >= found.expires_at:
        raise SlackError("expired_url", status=404)
    if found.uses_left <= 0:
        raise SlackError("used_url", status=404)
    found.uses_left -= 1
    return found


def open_app_home(world: World, token: Token, app_id: str, tab: str, now: float
                  ) -> tuple[Conversation, list[Change]]:
    """A person clicks the app in Slack's sidebar: the Home or Messages tab opens."""
    if token.kind != "user":
        raise SlackError("not_allowed_token_type")
    if tab not in ("home", "messages"):
        raise invalid_arguments("tab must be home or messages")
    installation = world.installation(app_id, token.team_id)
    if installation is None:
        raise SlackError("app_not_found")
    conv, _ = world.open_dm(token.team_id, [token.user_id, installation.bot_user_id], now)
    change = AppHomeOpened(team_id=token.team_id, event_ts=world.next_ts(now), app_id=app_id,
                           user=token.user_id, channel=conv.id, tab=tab)
    return conv, [change]
