"""OAuth v2: the authorize page (approving at once for a named person) and oauth.v2.access.

Slack shows a consent page to a signed-in person; the sandbox has no sign-in, so
``GET /oauth/v2/authorize?client_id=…&scope=…&user=U…`` approves for that
person and redirects to the app's redirect URL with ``code`` (and ``state``).
``oauth.v2.access`` exchanges the code; apps with token rotation get tokens
that expire (``expires_in``) and a refresh token for ``grant_type=refresh_token``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from ._call import Args
from ._seed import KNOWN_SCOPES
from ._state import App, OAuthCode, SlackError, World

OAUTH_CODE_LIFETIME = 600.0


def _client(world: World, args: Args, basic: tuple[str, str] | None) -> App:
    client_id, client_secret = basic if basic is not None else (
        args.optional("client_id") or "", args.optional("client_secret") or "")
    app = world.app_for_client(client_id) if client_id else None
    if app is None:
        raise SlackError("invalid_client_id")
    if not secrets.compare_digest(client_secret.encode(), app.client_secret.encode()):
        raise SlackError("bad_client_secret")
    return app


def _team_json(world: World, team_id: str) -> dict[str, str]:
    return {"name": world.workspaces[team_id].name, "id": team_id}


def oauth_v2_access(world: World, args: Args, now: float,
                    basic: tuple[str, str] | None) -> dict[str, Any]:
    """Exchange an authorization code, or a refresh token, for tokens."""
    grant = args.optional("grant_type") or "authorization_code"
    if grant == "refresh_token":
        app = _client(world, args, basic)
        return _refresh(world, app, args.optional("refresh_token") or "", now)
    if grant != "authorization_code":
        raise SlackError("invalid_grant_type")
    app = _client(world, args, basic)
    code = world.oauth_codes.get(args.optional("code") or "")
    if code is None or code.used or code.app_id != app.id or now >= code.expires_at:
        raise SlackError("invalid_code")
    if code.redirect_uri and (args.optional("redirect_uri") or "") != code.redirect_uri:
        raise SlackError("bad_redirect_uri")
    code.used = True
    body: dict[str, Any] = {"app_id": app.id, "team": _team_json(world, code.team_id),
                            "enterprise": None, "is_enterprise_install": False}
    if code.scopes:
        installation = world.install(app, code.team_id, code.scopes, now)
        existing = [t for t in world.tokens_of(app.id, code.team_id) if t.kind == "bot"
                    and t.expires_at is None]
        if existing and not app.token_rotation:
            bot_token, refresh = existing[0], None
        else:
            bot_token, refresh = world.issue_token(
                kind="bot", app=app, team_id=code.team_id,
                user_id=installation.bot_user_id, scopes=installation.scopes, now=now)
        body.update({"access_token": bot_token.value, "token_type": "bot",
                     "scope": ",".join(sorted(installation.scopes)),
                     "bot_user_id": installation.bot_user_id})
        if refresh is not None and bot_token.expires_at is not None:
            body["expires_in"] = int(bot_token.expires_at - now)
            body["refresh_token"] = refresh.value
    authed: dict[str, Any] = {"id": code.user_id}
    if code.user_scopes:
        user_token, refresh = world.issue_token(kind="user", app=app, team_id=code.team_id,
                                                user_id=code.user_id, scopes=code.user_scopes,
                                                now=now)
        authed.update({"scope": ",".join(sorted(code.user_scopes)),
                       "access_token": user_token.value, "token_type": "user"})
        if refresh is not None and user_token.expires_at is not None:
            authed["expires_in"] = int(user_token.expires_at - now)
            authed["refresh_token"] = refresh.value
    body["authed_user"] = authed
    return body


def _refresh(world: World, app: App, value: str, now: float) -> dict[str, Any]:
    refresh = world.refresh_tokens.get(value)
    if refresh is None or refresh.revoked or refresh.app_id != app.id:
        raise SlackError("invalid_refresh_token")
    refresh.revoked = True
    scopes = refresh.scopes
    if refresh.kind == "bot":
        installation = world.installation(app.id, refresh.team_id)
        if installation is None:
            raise SlackError("invalid_refresh_token")
        scopes = installation.scopes
    token, new_refresh = world.issue_token(kind=refresh.kind, app=app, team_id=refresh.team_id,
                                           user_id=refresh.user_id, scopes=scopes, now=now)
    assert new_refresh is not None and token.expires_at is not None  # rotating apps only
    body: dict[str, Any] = {"app_id": app.id, "scope": ",".join(sorted(scopes)),
                            "token_type": refresh.kind, "access_token": token.value,
                            "expires_in": int(token.expires_at - now),
                            "refresh_token": new_refresh.value,
                            "team": _team_json(world, refresh.team_id), "enterprise": None,
                            "is_enterprise_install": False}
    if refresh.kind == "bot":
        body["bot_user_id"] = refresh.user_id
    else:
        body["user_id"] = refresh.user_id
    return body


class AuthorizeAnswer(NamedTuple):
    """The authorize page's answer: a redirect carrying the code, or JSON."""

    status: int
    location: str | None
    body: dict[str, Any]


def oauth_authorize(world: World, query: Mapping[str, str], now: float) -> AuthorizeAnswer:
    """``GET /oauth/v2/authorize``: the person ``user`` approves the install at once.

    Slack shows a consent page to a signed-in person; the sandbox has no
    sign-in, so the query names the approving person with ``user=U…``.
    """
    app = world.app_for_client(query.get("client_id", ""))
    if app is None:
        return AuthorizeAnswer(400, None, {"ok": False, "error": "invalid_client_id"})
    scopes = frozenset(s for s in query.get("scope", "").replace(" ", ",").split(",") if s)
    user_scopes = frozenset(s for s in query.get("user_scope", "").replace(" ", ",").split(",")
                            if s)
    unknown = sorted((scopes | user_scopes) - KNOWN_SCOPES)
    if unknown:
        return AuthorizeAnswer(400, None, {"ok": False, "error": "invalid_scope",
                                           "detail": f"unknown scopes: {', '.join(unknown)}"})
    if not scopes and not user_scopes:
        return AuthorizeAnswer(400, None, {"ok": False, "error": "no_scopes"})
    user = world.users.get(query.get("user", ""))
    if user is None or user.is_bot or user.deleted:
        return AuthorizeAnswer(400, None, {
            "ok": False, "error": "user_not_found",
            "detail": "the sandbox has no sign-in: name the approving person with user=U…"})
    redirect_uri = query.get("redirect_uri", "")
    target = redirect_uri or (app.redirect_urls[0] if app.redirect_urls else "")
    if redirect_uri and app.redirect_urls and not any(
            _redirect_matches(redirect_uri, allowed) for allowed in app.redirect_urls):
        return AuthorizeAnswer(400, None, {"ok": False, "error": "bad_redirect_uri"})
    world.prune(now)
    code = OAuthCode(code=f"{secrets.randbelow(10**12)}.{secrets.token_hex(16)}", app_id=app.id,
                     team_id=user.team_id, user_id=user.id, scopes=scopes,
                     user_scopes=user_scopes, redirect_uri=redirect_uri,
                     expires_at=now + OAUTH_CODE_LIFETIME)
    world.oauth_codes[code.code] = code
    params = {"code": code.code}
    if "state" in query:
        params["state"] = query["state"]
    if not target:
        return AuthorizeAnswer(200, None, {"ok": True, **params})
    separator = "&" if urlsplit(target).query else "?"
    return AuthorizeAnswer(302, f"{target}{separator}{urlencode(params)}", {"ok": True})


def _redirect_matches(uri: str, allowed: str) -> bool:
    """Slack accepts the configured URL or a URL below it (same scheme, host and port)."""
    given, configured = urlsplit(uri), urlsplit(allowed)
    return (given.scheme, given.netloc) == (configured.scheme, configured.netloc) and \
        given.path.startswith(configured.path)
