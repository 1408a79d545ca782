"""The OAuth v2 install flow and token rotation, through slack_sdk's oauth_v2_access."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from ._kit import GENERAL, MARY, FakeClock, in_thread, make_seed, running

CALLBACK = "http://127.0.0.1:9/slack/oauth_redirect"
ROTATING = (f'redirect_urls = ["{CALLBACK}"]\n'
            "token_rotation = true\n"
            "token_expires_in = 3600")


async def authorize(url: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.get(url + "/oauth/v2/authorize", params=params)


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


async def test_install_exchange_rotate_and_expire() -> None:
    clock = FakeClock(start=time.time())
    async with running(make_seed(app_extra=ROTATING), clock=clock) as sandbox:
        code = code_of(await authorize(
            sandbox.url, client_id="111.222", scope="chat:write,channels:read",
            user_scope="search:read", user=MARY, state="xyz", redirect_uri=CALLBACK))
        anonymous = WebClient(base_url=sandbox.api_url)

        def install() -> tuple[str, str]:
            with pytest.raises(SlackApiError) as caught:
                anonymous.oauth_v2_access(client_id="111.222", client_secret="wrong", code=code)
            assert caught.value.response["error"] == "bad_client_secret"
            granted = anonymous.oauth_v2_access(client_id="111.222",
                                                client_secret="client-secret", code=code,
                                                redirect_uri=CALLBACK)
            assert (granted["token_type"], granted["app_id"], granted["bot_user_id"],
                    granted["team"], granted["expires_in"]) == (
                "bot", "A0INTERLINK", "U0BOT", {"name": "Acme", "id": "T0ACME"}, 3600)
            assert granted["access_token"].startswith("xoxe.xoxb-")
            assert granted["refresh_token"].startswith("xoxe-1-")
            assert set(granted["scope"].split(",")) >= {"chat:write", "channels:read"}
            authed = granted["authed_user"]
            assert (authed["id"], authed["token_type"], authed["scope"]) == (
                MARY, "user", "search:read")
            assert authed["access_token"].startswith("xoxe.xoxp-")
            with pytest.raises(SlackApiError) as caught:
                anonymous.oauth_v2_access(client_id="111.222", client_secret="client-secret",
                                          code=code, redirect_uri=CALLBACK)
            assert caught.value.response["error"] == "invalid_code"
            bot = WebClient(token=granted["access_token"], base_url=sandbox.api_url)
            assert bot.auth_test()["expires_in"] == 3600
            bot.chat_postMessage(channel=GENERAL, text="installed")
            return granted["access_token"], granted["refresh_token"]

        access, refresh = await in_thread(install)
        clock.advance(3600)

        def rotate() -> None:
            expired = WebClient(token=access, base_url=sandbox.api_url)
            with pytest.raises(SlackApiError) as caught:
                expired.auth_test()
            assert caught.value.response["error"] == "token_expired"
            renewed = anonymous.oauth_v2_access(client_id="111.222",
                                                client_secret="client-secret",
                                                grant_type="refresh_token", refresh_token=refresh)
            assert renewed["token_type"] == "bot" and renewed["expires_in"] == 3600
            assert renewed["refresh_token"] != refresh
            fresh = WebClient(token=renewed["access_token"], base_url=sandbox.api_url)
            assert fresh.auth_test()["user_id"] == "U0BOT"
            with pytest.raises(SlackApiError) as caught:
                anonymous.oauth_v2_access(client_id="111.222", client_secret="client-secret",
                                          grant_type="refresh_token", refresh_token=refresh)
            assert caught.value.response["error"] == "invalid_refresh_token"

        await in_thread(rotate)


async def test_reinstalling_without_rotation_keeps_the_bot_token_and_bad_requests_fail(
        ) -> None:
    async with running(make_seed()) as sandbox:
        answer = await authorize(sandbox.url, client_id="111.222", scope="chat:write",
                                 user=MARY)
        assert answer.status_code == 200  # no redirect URL: the code comes back as JSON
        code = answer.json()["code"]
        async with httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
            granted = (await http.post("oauth.v2.access", data={
                "client_id": "111.222", "client_secret": "client-secret", "code": code})).json()
            assert granted["access_token"] == "xoxb-interlink"
            assert "refresh_token" not in granted
            unknown = await http.post("oauth.v2.access", data={"client_id": "nope", "code": "x"})
            assert unknown.json() == {"ok": False, "error": "invalid_client_id"}
            grant = await http.post("oauth.v2.access", data={
                "client_id": "111.222", "client_secret": "client-secret",
                "grant_type": "password"})
            assert grant.json()["error"] == "invalid_grant_type"
        for params, error in [({"client_id": "nope", "scope": "chat:write", "user": MARY},
                               "invalid_client_id"),
                              ({"client_id": "111.222", "scope": "chat.write", "user": MARY},
                               "invalid_scope"),
                              ({"client_id": "111.222", "scope": "chat:write"},
                               "user_not_found")]:
            refused = await authorize(sandbox.url, **params)
            assert (refused.status_code, refused.json()["error"]) == (400, error)
