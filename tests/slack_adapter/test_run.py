"""``interlink run`` with examples/slack.toml: the embedded sandbox, the Slack adapter in
Socket Mode and a loopback echo contact, driven from outside as a person would."""

from __future__ import annotations

import json
import os
import signal

import httpx
import trio

from tests.test_cli import ROOT, LiveEngine, _cli, _free_port, engine_process

EXAMPLE = ROOT / "examples" / "slack.toml"


async def test_a_slack_message_reaches_the_loopback_contact_and_comes_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sandbox_port, control_port = _free_port(), _free_port()
    text = EXAMPLE.read_text()
    text = text.replace("127.0.0.1:3000", f"127.0.0.1:{sandbox_port}")
    text = text.replace('"../state/sandbox', f'"{tmp_path}/secrets')
    text = text.replace('data_dir = "../state/slack"', f'data_dir = "{tmp_path}/data"')
    text = text.replace('seed = "sandbox-seed.toml"', f'seed = "{ROOT}/examples/sandbox-seed.toml"')
    text = text.replace('level = "info"\nformat = "text"', 'level = "debug"\nformat = "json"')
    text += f'\n[control]\nlisten = "127.0.0.1:{control_port}"\n'
    config = tmp_path / "slack.toml"
    config.write_text(text)
    api = f"http://127.0.0.1:{sandbox_port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": "t0ken"}
    async with engine_process(config, env) as process, \
            httpx.AsyncClient(trust_env=False, headers={"Authorization": "Bearer xoxp-john"}) \
            as john:
        live = LiveEngine(process)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(live.collect)
                await live.wait_for(lambda r: r["msg"] == "slack adapter started")
                await live.wait_for(lambda r: r["msg"] == "ready")
                added = await john.post(api + "/sandbox/command", json={
                    "command": "/interlink", "text": "add echo@widget.localhost",
                    "channel": "C0GENERAL"})
                assert added.json()["ok"], added.text
                # echo accepts at once; the acceptance opens John's private conversation
                await live.wait_for(lambda r: r["msg"] == "slack delivered"
                                    and r.get("kind") == "contact")
                said = await _cli("say", "--as", "john@acme.localhost", "--to",
                                  "echo@widget.localhost", "hi *there* marker-7q",
                                  "--config", str(config), token="t0ken")
                assert said.returncode == 0, said.stderr
                await live.wait_for(lambda r: r["msg"] == "slack delivered"
                                    and r.get("kind") == "im")
                conversations = await john.post(api + "/api/conversations.list",
                                                data={"types": "private_channel"})
                (channel,) = [c["id"] for c in conversations.json()["channels"]
                              if c["name"] == "ext-echo-widget-localhost"]
                history = await john.post(api + "/api/conversations.history",
                                          data={"channel": channel})
                echoed = [m for m in history.json()["messages"]
                          if m.get("username") == "echo@widget.localhost"]
                assert [m["text"] for m in echoed] == ["hi *there* marker-7q"]
                process.send_signal(signal.SIGINT)
                code = await process.wait()
    assert code == 0
    assert "marker-7q" not in json.dumps(live.records), "logs must not carry content"
