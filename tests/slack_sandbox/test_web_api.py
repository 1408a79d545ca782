"""The Web API over real HTTP, judged by Slack's own ``slack_sdk.WebClient``."""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings, serve_sandbox

from ._kit import (
    BOT,
    GENERAL,
    JOHN,
    MARY,
    PARTNERS,
    PETER,
    SECRET,
    in_thread,
    make_seed,
    running,
)

NO_LIMITS = SandboxSettings(rate_limits=RateLimitSettings(enabled=False))


def clients(sandbox: Sandbox) -> tuple[WebClient, WebClient, WebClient]:
    """The bot, john and mary."""
    return tuple(WebClient(token=t, base_url=sandbox.api_url)  # type: ignore[return-value]
                 for t in ("xoxb-interlink", "xoxp-john", "xoxp-mary"))


def slack_error(call: object) -> SlackApiError:
    assert callable(call)
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


async def test_the_bot_posts_as_itself_and_as_a_contact_in_threads_with_blocks() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox:
        bot, john, _ = clients(sandbox)

        def work() -> None:
            me = bot.auth_test()
            assert (me["user_id"], me["team_id"], me["bot_id"], me["user"]) == (
                BOT, "T0ACME", "B0INTERLINK", "interlink")
            assert me["url"] == "https://acme.slack.com/"
            root = john.chat_postMessage(channel=GENERAL, text="Anyone from Widget?")
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi* john"}}]
            reply = bot.chat_postMessage(
                channel=GENERAL, thread_ts=root["ts"], text="hi john", blocks=blocks,
                username="Peter (widget.com)", icon_url="https://avatars.example/p.png")
            message = reply["message"]
            assert message["subtype"] == "bot_message"
            assert message["username"] == "Peter (widget.com)"
            assert message["icons"]["image_48"] == "https://avatars.example/p.png"
            assert message["blocks"][0]["text"] == blocks[0]["text"]
            assert message["thread_ts"] == root["ts"]
            emoji = bot.chat_postMessage(channel=GENERAL, text="x", icon_emoji=":robot_face:",
                                         thread_ts=root["ts"])
            assert emoji["message"]["icons"] == {"emoji": ":robot_face:"}
            thread = bot.conversations_replies(channel=GENERAL, ts=root["ts"])
            assert [m["ts"] for m in thread["messages"]] == [root["ts"], reply["ts"],
                                                             emoji["ts"]]
            assert thread["messages"][0]["reply_count"] == 2
            assert thread["messages"][1]["parent_user_id"] == JOHN
            history = bot.conversations_history(channel=GENERAL)
            assert [m["ts"] for m in history["messages"]] == [root["ts"]]
            updated = bot.chat_update(channel=GENERAL, ts=reply["ts"], text="hi again")
            assert updated["text"] == "hi again"
            assert updated["message"]["edited"]["user"] == BOT
            assert bot.chat_delete(channel=GENERAL, ts=emoji["ts"])["ts"] == emoji["ts"]
            assert slack_error(lambda: john.chat_update(
                channel=GENERAL, ts=reply["ts"], text="mine now")).response["error"] == \
                "cant_update_message"
            ephemeral = bot.chat_postEphemeral(channel=GENERAL, user=JOHN, text="psst")
            assert ephemeral["message_ts"]

        await in_thread(work)
        assert [e["text"] for e in sandbox.ephemeral_messages(JOHN)] == ["psst"]
        texts = [m["text"] for m in sandbox.messages(GENERAL)]
        assert texts == ["Anyone from Widget?", "hi again"]


async def test_conversations_reactions_and_people_with_bot_and_user_tokens() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox:
        bot, john, mary = clients(sandbox)

        def work() -> None:
            created = bot.conversations_create(name="ext-peter-widget-com", is_private=True)
            channel = created["channel"]
            assert channel["is_private"] and channel["is_member"]
            assert channel["creator"] == BOT
            invited = bot.conversations_invite(channel=channel["id"], users=JOHN)
            assert invited["channel"]["id"] == channel["id"]
            assert bot.conversations_members(channel=channel["id"])["members"] == [BOT, JOHN]
            topic = bot.conversations_setTopic(channel=channel["id"], topic="Peter @ Widget")
            assert topic["channel"]["topic"]["value"] == "Peter @ Widget"
            info = john.conversations_info(channel=channel["id"], include_num_members=True)
            assert info["channel"]["num_members"] == 2
            assert info["channel"]["name"] == "ext-peter-widget-com"
            assert slack_error(lambda: mary.conversations_info(
                channel=channel["id"])).response["error"] == "channel_not_found"
            opened = bot.conversations_open(users=JOHN, return_im=True)
            assert opened["channel"]["is_im"] and opened["channel"]["user"] == JOHN
            again = bot.conversations_open(users=[JOHN])
            assert again["channel"]["id"] == opened["channel"]["id"] and again["already_open"]
            group = john.conversations_open(users=[MARY, PETER])
            assert group["channel"]["id"].startswith("C")
            posted = john.chat_postMessage(channel=opened["channel"]["id"], text="hello bot")
            assert bot.reactions_add(channel=opened["channel"]["id"], timestamp=posted["ts"],
                                     name="wave")["ok"]
            assert john.reactions_add(channel=opened["channel"]["id"], timestamp=posted["ts"],
                                      name="wave")["ok"]
            history = bot.conversations_history(channel=opened["channel"]["id"])
            assert history["messages"][0]["reactions"] == [
                {"name": "wave", "users": [BOT, JOHN], "count": 2}]
            assert bot.reactions_remove(channel=opened["channel"]["id"],
                                        timestamp=posted["ts"], name="wave")["ok"]
            error = slack_error(lambda: bot.reactions_remove(
                channel=opened["channel"]["id"], timestamp=posted["ts"], name="wave"))
            assert error.response["error"] == "no_reaction"

            user = bot.users_info(user=JOHN)["user"]
            assert (user["name"], user["real_name"], user["profile"]["email"],
                    user["profile"]["title"]) == ("john", "John Smith", "john@acme.localhost",
                                                  "Head of Sales")
            assert bot.users_lookupByEmail(email="MARY@acme.localhost")["user"]["id"] == MARY
            profile = bot.users_profile_get(user=PETER)["profile"]
            assert profile["image_192"] == "https://avatars.example/peter.png"
            assert john.users_getPresence(user=JOHN)["presence"] == "active"
            assert john.users_setPresence(presence="away")["ok"]
            assert bot.users_getPresence(user=JOHN)["presence"] == "away"
            mine = john.users_getPresence(user=JOHN)
            assert mine["manual_away"] is True and mine["online"] is False
            names: list[str] = []
            for page in bot.users_list(limit=2):
                names += [m["name"] for m in page["members"]]
            assert names == ["john", "mary", "peter", "interlink"]
            assert john.users_profile_set(profile={"title": "CEO"})["profile"]["title"] == "CEO"
            joined = mary.conversations_join(channel=GENERAL)
            assert joined["already_in_channel"] is True
            assert john.team_info()["team"]["domain"] == "acme"

        await in_thread(work)


async def test_files_upload_v2_info_and_authenticated_download() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox:
        bot, john, mary = clients(sandbox)

        def work() -> dict[str, str]:
            upload = john.files_upload_v2(channel=SECRET, content=b"quarterly numbers",
                                          filename="q3.txt", title="Q3",
                                          initial_comment="for the bot")
            file = upload["file"]
            assert (file["name"], file["title"], file["size"], file["mimetype"]) == (
                "q3.txt", "Q3", 17, "text/plain")
            assert file["groups"] == [SECRET]
            info = bot.files_info(file=file["id"])["file"]
            assert info["url_private"].startswith(sandbox.url + "/files-pri/T0ACME-")
            assert slack_error(lambda: mary.files_info(file=file["id"])).response["error"] == \
                "file_not_found"
            history = bot.conversations_history(channel=SECRET)["messages"]
            assert history[0]["subtype"] == "file_share"
            assert history[0]["text"] == "for the bot"
            assert history[0]["files"][0]["id"] == file["id"]
            own = bot.files_upload_v2(channel=GENERAL, file=b"\x89PNG...", filename="x.png")
            assert own["file"]["filetype"] == "png"
            return {"url": info["url_private"], "download": info["url_private_download"]}

        urls = await in_thread(work)
        async with httpx.AsyncClient(trust_env=False) as http:
            ok = await http.get(urls["url"], headers={"Authorization": "Bearer xoxb-interlink"})
            assert (ok.status_code, ok.content) == (200, b"quarterly numbers")
            assert ok.headers["content-type"].startswith("text/plain")
            download = await http.get(urls["download"],
                                      headers={"Authorization": "Bearer xoxb-interlink"})
            assert download.headers["content-disposition"].startswith("attachment")
            anonymous = await http.get(urls["url"])
            assert anonymous.status_code == 302  # to the sign-in page, as Slack does
            page = await http.get(anonymous.headers["location"])
            assert page.headers["content-type"].startswith("text/html")
            wrong = await http.get(urls["url"], headers={"Authorization": "Bearer xoxb-nope"})
            assert wrong.status_code == 302
            other = await http.get(urls["url"], headers={"Authorization": "Bearer xoxp-mary"})
            assert other.status_code == 404  # mary is not in #secret


async def test_errors_raise_slack_api_error_with_slacks_codes() -> None:
    seed = make_seed(scopes='"chat:write", "channels:history", "commands"')
    async with running(seed, settings=NO_LIMITS) as sandbox:
        bot, john, _ = clients(sandbox)

        def work() -> None:
            error = slack_error(lambda: bot.chat_postMessage(channel=GENERAL, text="x",
                                                             username="Peter"))
            assert error.response["error"] == "missing_scope"
            assert error.response["needed"] == "chat:write.customize"
            assert error.response["provided"] == "channels:history,chat:write,commands"
            assert slack_error(lambda: bot.users_info(user=JOHN)).response["needed"] == \
                "users:read"
            assert slack_error(lambda: bot.chat_postMessage(
                channel="C0NOPE", text="x")).response["error"] == "channel_not_found"
            # (the SDK warns before sending a message without text, so call it raw)
            assert slack_error(lambda: bot.api_call(
                "chat.postMessage", json={"channel": GENERAL})).response["error"] == "no_text"
            assert slack_error(lambda: john.api_call(
                "chat.postMessage", params={"channel": PARTNERS, "blocks": "not json"})
            ).response["error"] == "invalid_blocks_format"
            unknown = slack_error(lambda: bot.api_call("no.suchMethod"))
            assert unknown.response.status_code == 404
            assert unknown.response["error"] == "unknown_method"
            bad = WebClient(token="xoxb-wrong", base_url=sandbox.api_url)
            assert slack_error(bad.auth_test).response["error"] == "invalid_auth"
            assert slack_error(WebClient(base_url=sandbox.api_url).auth_test).response[
                "error"] == "not_authed"
            assert john.auth_revoke()["revoked"] is True
            assert slack_error(john.auth_test).response["error"] == "token_revoked"

        await in_thread(work)


async def test_forms_json_query_strings_and_bounded_bodies() -> None:
    settings = SandboxSettings(rate_limits=NO_LIMITS.rate_limits, max_request_bytes=10_000)
    async with running(make_seed(), settings=settings) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
        bearer = {"Authorization": "Bearer xoxb-interlink"}
        as_get = await http.get("users.info", params={"user": JOHN, "token": "xoxb-interlink"})
        assert as_get.json()["user"]["id"] == JOHN
        as_form = await http.post("chat.postMessage", data={
            "token": "xoxp-john", "channel": GENERAL, "text": "form"})
        assert as_form.json()["ok"]
        as_json = await http.post("chat.postMessage", headers=bearer,
                                  json={"channel": GENERAL, "text": "json",
                                        "unfurl_links": False})
        assert as_json.json()["ok"]
        multipart = await http.post("chat.postMessage", headers=bearer, files={
            "channel": (None, GENERAL), "text": (None, "multipart")})
        assert multipart.json()["ok"]
        broken = await http.post("chat.postMessage", headers={
            **bearer, "Content-Type": "application/json"}, content=b"{not json")
        assert broken.status_code == 200
        assert broken.json() == {"ok": False, "error": "invalid_json"}
        huge = await http.post("chat.postMessage", headers=bearer,
                               json={"channel": GENERAL, "text": "x" * 20_000})
        assert huge.status_code == 413
        assert huge.json() == {"ok": False, "error": "request_too_large"}
        missing = await http.post("files.completeUploadExternal", headers=bearer)
        assert missing.json()["error"] == "invalid_arguments"
        assert missing.json()["response_metadata"]["messages"] == [
            "[ERROR] missing required field: files"]
        scopes = (await http.post("auth.test", headers=bearer)).headers["x-oauth-scopes"]
        assert "chat:write" in scopes.split(",")
        texts = [m["text"] for m in sandbox.messages(GENERAL)]
        assert texts == ["form", "json", "multipart"]
        nowhere = await http.post("/nowhere")
        assert nowhere.status_code == 404
        assert json.loads(nowhere.content)["ok"] is False


async def test_serve_sandbox_starts_with_its_url(nursery: trio.Nursery) -> None:
    url = await nursery.start(partial(serve_sandbox, make_seed(), port=0))
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.post(f"{url}/api/auth.test", data={"token": "xoxp-mary"})
        assert answer.json()["user_id"] == MARY


async def test_injected_failures_answer_instead_of_the_method_then_stop() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
        bearer = {"Authorization": "Bearer xoxb-interlink"}
        sandbox.inject_failures("auth.test", count=2, status=503, error=None, retry_after=3)
        for _ in range(2):
            failed = await http.post("auth.test", headers=bearer)
            assert (failed.status_code, failed.text) == (503, "injected failure")
            assert failed.headers["retry-after"] == "3"
        assert (await http.post("auth.test", headers=bearer)).json()["ok"] is True

        sandbox.inject_failures("chat.postMessage", status=200, error="fatal_error")
        fatal = await http.post("chat.postMessage", headers=bearer,
                                json={"channel": GENERAL, "text": "lost"})
        assert (fatal.status_code, fatal.json()) == (200, {"ok": False, "error": "fatal_error"})

        sandbox.inject_failures("chat.postMessage", drop_connection=True)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("chat.postMessage", headers=bearer,
                            json={"channel": GENERAL, "text": "dropped"})
        posted = await http.post("chat.postMessage", headers=bearer,
                                 json={"channel": GENERAL, "text": "kept"})
        assert posted.json()["ok"] is True

        sandbox.inject_failures("users.info", count=5)
        sandbox.inject_failures("users.info", count=0)  # cleared
        assert (await http.post("users.info", headers=bearer,
                                data={"user": JOHN})).json()["ok"] is True
        with pytest.raises(ValueError, match="status"):
            sandbox.inject_failures("users.info", status=42)

        assert [m["text"] for m in sandbox.messages(GENERAL)] == ["kept"]
        statistics = sandbox.statistics()
        assert statistics.failures_injected == 4
        assert statistics.api_calls == 3  # failures never reach the method
