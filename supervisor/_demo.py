"""``interlink demo --script``: a scripted conversation between John on Slack (the
embedded sandbox) and Peter on XMPP (the embedded Prosody), through a running
``interlink run --config examples/demo.toml``.

Every step acts on one side and waits until the other side observes it; the
step is printed when observed. A step not observed within its time limit is
printed as failed and the command exits 1. The script talks to the platforms
only as their users would: John through the sandbox's Web API with his user
token, Peter through an XMPP client logged in to Prosody.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape as xml_escape

import httpx
import trio

from adapters.slack.sandbox import load_seed
from adapters.xmpp import Received, TestClient, open_client
from engine import ConfigError

from ._config import Config

#: written by ``interlink run`` when it starts demo platforms; read by the script
DEMO_FILE = "demo.json"
STEP_TIMEOUT = 20.0


#: seconds between looks at Slack's state (as a Slack client would refresh)
POLL = 0.25


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Look again every :data:`POLL` seconds until ``check()`` holds."""
    while True:
        if await check():
            return
        await trio.sleep(POLL)


class DemoUnavailable(Exception):
    """The demo is not running (or not this config's demo)."""


@dataclass(frozen=True)
class DemoInfo:
    slack_api: str  # http://127.0.0.1:3000/api/
    john: str
    john_token: str
    john_user_id: str
    xmpp_host: str
    xmpp_port: int
    peter: str
    peter_password: str

    @property
    def sandbox(self) -> str:
        return self.slack_api.removesuffix("/api/")


def write_demo_info(config: Config, info: dict[str, Any]) -> Path:
    """Where the running demo says what the script needs (ports, not passwords)."""
    path = config.data_dir() / DEMO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def read_demo_info(config: Config) -> DemoInfo:
    path = config.data_dir() / DEMO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DemoUnavailable(f"no running demo found ({path} is missing): start it with "
                              f"`make run` (or `interlink run --config examples/demo.toml`)"
                              ) from None
    seed = load_seed(config.path(config.sandbox.seed))
    tokens = {(w.id, u.id): u.token for w in seed.workspace for u in w.user}
    john = info["slack"]["user"]
    peter = info["xmpp"]["user"]
    password_file = Path(info["xmpp"]["password_file"])
    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError:
        raise DemoUnavailable(f"cannot read Peter's password from {password_file}") from None
    return DemoInfo(
        slack_api=info["slack"]["api_url"], john=john["address"],
        john_token=tokens.get((john["team_id"], john["user_id"]), ""),
        john_user_id=john["user_id"], xmpp_host=info["xmpp"]["host"],
        xmpp_port=int(info["xmpp"]["c2s_port"]), peter=peter, peter_password=password)


def interlink_command(cwd: Path | None = None) -> str:
    """``interlink`` as a shell runs it from ``cwd``: the ``interlink`` script beside the
    running interpreter (``.venv/bin/interlink`` in a fresh clone: a path, as the virtual
    environment is not on the ``PATH``), relative to ``cwd`` when inside it; else the one
    on the ``PATH``; else ``python -m supervisor.cli`` with this interpreter."""
    cwd = (cwd or Path.cwd()).resolve()
    executable = Path(sys.executable)
    script = executable.parent / "interlink"
    if script.is_file() and os.access(script, os.X_OK):
        return _shell_path(script, cwd)
    if shutil.which("interlink"):
        return "interlink"
    return f"{_shell_path(executable, cwd)} -m supervisor.cli"


def _shell_path(path: Path, cwd: Path) -> str:
    """``path`` for a shell in ``cwd``: relative (with a ``/``, so not looked up on the
    ``PATH``) when inside ``cwd``, else absolute; quoted when needed."""
    absolute = path if path.is_absolute() else cwd / path
    try:
        relative = absolute.relative_to(cwd)
    except ValueError:
        return shlex.quote(str(absolute))
    text = str(relative)
    return shlex.quote(text if "/" in text else f"./{text}")


def demo_banner(details: dict[str, Any], config_path: str, *, command: str = "") -> str:
    """How to talk as each side, printed when the demo is up: commands that run as
    printed from the directory ``interlink run`` was started in (``command``: how to
    run ``interlink`` there, by default :func:`interlink_command`)."""
    slack, xmpp = details["slack"], details["xmpp"]
    john, peter = slack["user"]["address"], xmpp["user"]
    password = Path(xmpp["password_file"]).read_text(encoding="utf-8").strip()
    interlink = command or interlink_command()
    config = f" --config {shlex.quote(config_path)}" if config_path else ""
    return f"""
Interlink demo is up: {john} on Slack <-> {peter} on XMPP.

  Slack side (the local sandbox at {slack["sandbox"]}, workspace Acme, user John):
    {interlink} say --as {john} --to {peter} 'hi *Peter*'{config}
    slash commands:  curl -H 'Authorization: Bearer xoxp-john' \\
      -H 'Content-Type: application/json' {slack["sandbox"]}/sandbox/command \\
      -d '{{"command": "/interlink", "channel": "C0GENERAL", "text": "add {peter}"}}'

  XMPP side (Prosody at {xmpp["host"]}:{xmpp["c2s_port"]}; plaintext login allowed, STARTTLS
  with a self-signed certificate) - any XMPP client:
    JID {peter}   password {password}

  The whole tour, every feature, checked on the other side:
    {interlink} demo --script{config}
"""


class Tour:
    """The steps, with John's and Peter's handles and what earlier steps learned."""

    def __init__(self, info: DemoInfo, http: httpx.AsyncClient, peter: TestClient,
                 out: TextIO) -> None:
        self.info = info
        self.http = http
        self.peter = peter
        self.out = out
        self.run_id = secrets.token_hex(3)
        self.channel = ""
        self.john_ts = self.john_xmpp_id = self.peter_ts = self.thread_ts = ""
        self.thread_xmpp_id = ""

    # -- John's side (Slack Web API as John) ----------------------------------------
    async def slack(self, method: str, **args: Any) -> dict[str, Any]:
        """Call the Web API as John, waiting out Slack's rate limits as a client must."""
        while True:
            response = await self.http.post(self.info.slack_api + method, json=args,
                                            headers={"Authorization":
                                                     f"Bearer {self.info.john_token}"})
            if response.status_code != 429:
                break
            await trio.sleep(min(float(response.headers.get("retry-after", "1")), 5.0))
        answer: dict[str, Any] = response.json()
        if not answer.get("ok"):
            raise AssertionError(f"Slack {method} failed: {answer.get('error')}")
        return answer

    async def command(self, text: str) -> str:
        response = await self.http.post(
            self.info.sandbox + "/sandbox/command",
            json={"command": "/interlink", "text": text, "channel": "C0GENERAL"},
            headers={"Authorization": f"Bearer {self.info.john_token}"})
        answer = response.json()
        if not answer.get("ok"):
            raise AssertionError(f"/interlink {text}: {answer.get('error')}")
        reply: str = (answer.get("response") or {}).get("text", "")
        return reply

    async def slack_sees(self, predicate: Callable[[dict[str, Any]], bool],
                         ) -> dict[str, Any]:
        """Poll John's conversation until a message matches (Slack has no push for people
        in the sandbox; a Slack client would show it the same way)."""
        while True:
            history = await self.slack("conversations.history", channel=self.channel,
                                       limit=200)
            for message in history["messages"]:
                if predicate(message):
                    found: dict[str, Any] = message
                    return found
            await trio.sleep(POLL)

    async def in_thread(self, text: str) -> bool:
        """Whether the thread under John's first message holds a reply with ``text``."""
        replies = await self.slack("conversations.replies", channel=self.channel,
                                   ts=self.john_ts)
        return any(m.get("text") == text for m in replies["messages"])

    async def find_channel(self) -> str:
        peter = self.info.peter.replace("@", "-").replace(".", "-")
        while True:
            listed = await self.slack("conversations.list", types="private_channel")
            for channel in listed["channels"]:
                if channel["name"] == f"ext-{peter}":
                    return str(channel["id"])
            await trio.sleep(POLL)

    # -- Peter's side (an XMPP client) -------------------------------------------
    async def peter_sees(self, predicate: Callable[[Received], bool],
                         kind: str = "message") -> Received:
        while True:
            stanza = await self.peter.next_stanza(kind, timeout=STEP_TIMEOUT)
            if stanza.sender.partition("/")[0] == self.info.john and predicate(stanza):
                return stanza

    async def peter_sends(self, xml: str) -> None:
        await self.peter.send_raw(xml)

    def message(self, body: str, *, extra: str = "", stanza_id: str = "") -> str:
        stanza_id = stanza_id or f"p-{secrets.token_hex(4)}"
        return (f"<message type='chat' to='{self.info.john}' id='{stanza_id}'>"
                f"<body>{xml_escape(body)}</body>"
                f"<origin-id xmlns='urn:xmpp:sid:0' id='{stanza_id}'/>{extra}</message>")

    # -- the steps -----------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("John adds peter with /interlink add; Peter's client is asked to subscribe",
             self.add_contact),
            ("Peter accepts; John sees the acceptance in his private conversation",
             self.accept),
            ("John writes rich text on Slack; Peter gets it as XEP-0393 styling, with a "
             "receipt request", self.john_writes),
            ("Peter answers; John sees it under Peter's name", self.peter_writes),
            ("John edits his message; Peter gets a correction (XEP-0308)", self.john_edits),
            ("Peter corrects his message; John sees it edited", self.peter_edits),
            ("Peter reacts 👍 (XEP-0444); John sees the reaction", self.peter_reacts),
            ("John reacts :tada:; Peter gets the reaction", self.john_reacts),
            ("Peter replies to John's message (XEP-0461); John sees a thread reply",
             self.peter_replies),
            ("John answers in the thread; Peter gets a reply to the same message",
             self.john_replies),
            ("Peter retracts his reply (XEP-0424); it disappears from Slack",
             self.peter_retracts),
            ("John deletes his thread answer; Peter gets a retraction", self.john_deletes),
            ("John shares a file; Peter gets a link (XEP-0066) and downloads the bytes",
             self.john_shares_file),
            ("Peter shares a file link; John sees the file uploaded in Slack",
             self.peter_shares_file),
            ("Peter goes away; John sees it in the conversation's topic",
             self.peter_goes_away),
            ("John goes away on Slack; Peter sees John's presence change",
             self.john_goes_away),
            ("Peter reads John's profile (vCard-temp): name and title", self.peter_reads_vcard),
            ("Peter types and sends a receipt; nothing bounces (Slack shows neither)",
             self.typing_and_receipts),
            ("John removes Peter with /interlink remove; Peter's client hears it",
             self.remove_contact),
        ]

    async def add_contact(self) -> None:
        reply = await self.command(f"add {self.info.peter}")
        if "Asked" not in reply:
            raise AssertionError(f"unexpected reply: {reply}")
        await self.peter_sees(lambda s: s.type == "subscribe", kind="presence")

    async def accept(self) -> None:
        await self.peter_sends(f"<presence to='{self.info.john}' type='subscribed'/>")
        self.channel = await self.find_channel()
        await self.slack_sees(lambda m: "accepted" in m.get("text", ""))

    async def john_writes(self) -> None:
        text = f"Hi *Peter*, the _Q3 numbers_ are ~draft~ final ({self.run_id})"
        posted = await self.slack("chat.postMessage", channel=self.channel, text=text)
        self.john_ts = posted["ts"]
        got = await self.peter_sees(lambda s: s.body == text)
        if "urn:xmpp:receipts" not in got.xml:
            raise AssertionError("no receipt request on John's message")
        self.john_xmpp_id = got.id

    async def peter_writes(self) -> None:
        text = f"Thanks *John*! ({self.run_id})"
        await self.peter_sends(self.message(text, stanza_id=f"p1-{self.run_id}"))
        seen = await self.slack_sees(lambda m: m.get("text") == text and bool(m.get("username")))
        self.peter_ts = seen["ts"]

    async def john_edits(self) -> None:
        text = f"Hi *Peter*, the _Q3 numbers_ are final ({self.run_id})"
        await self.slack("chat.update", channel=self.channel, ts=self.john_ts, text=text)
        await self.peter_sees(lambda s: s.body == text and "message-correct" in s.xml)

    async def peter_edits(self) -> None:
        text = f"Thanks a lot *John*! ({self.run_id})"
        await self.peter_sends(self.message(
            text, extra=f"<replace xmlns='urn:xmpp:message-correct:0' id='p1-{self.run_id}'/>"))
        await self.slack_sees(lambda m: m["ts"] == self.peter_ts and m.get("text") == text)

    async def peter_reacts(self) -> None:
        await self.peter_sends(
            f"<message type='chat' to='{self.info.john}' id='r-{self.run_id}'>"
            f"<reactions xmlns='urn:xmpp:reactions:0' id='{self.john_xmpp_id}'>"
            f"<reaction>👍</reaction></reactions></message>")
        await self.slack_sees(lambda m: m["ts"] == self.john_ts and any(
            r.get("name") in ("+1", "thumbsup") for r in m.get("reactions", [])))

    async def john_reacts(self) -> None:
        await self.slack("reactions.add", channel=self.channel, timestamp=self.peter_ts,
                         name="tada")
        await self.peter_sees(lambda s: "urn:xmpp:reactions:0" in s.xml and "🎉" in s.xml)

    async def peter_replies(self) -> None:
        text = f"Replying to your numbers ({self.run_id})"
        await self.peter_sends(self.message(
            text, stanza_id=f"p2-{self.run_id}",
            extra=f"<reply xmlns='urn:xmpp:reply:0' to='{self.info.john}' "
                  f"id='{self.john_xmpp_id}'/>"))
        await until(lambda: self.in_thread(text))

    async def john_replies(self) -> None:
        text = f"In the thread ({self.run_id})"
        posted = await self.slack("chat.postMessage", channel=self.channel, text=text,
                                  thread_ts=self.john_ts)
        self.thread_ts = posted["ts"]
        got = await self.peter_sees(lambda s: s.body.endswith(text) and (
            "urn:xmpp:reply:0" in s.xml or "<thread" in s.xml))
        self.thread_xmpp_id = got.id

    async def peter_retracts(self) -> None:
        await self.peter_sends(
            f"<message type='chat' to='{self.info.john}' id='x-{self.run_id}'>"
            f"<retract xmlns='urn:xmpp:message-retract:1' id='p2-{self.run_id}'/>"
            f"<body>This person attempted to retract a previous message.</body></message>")
        text = f"Replying to your numbers ({self.run_id})"

        async def gone() -> bool:
            return not await self.in_thread(text)

        await until(gone)

    async def john_deletes(self) -> None:
        await self.slack("chat.delete", channel=self.channel, ts=self.thread_ts)
        await self.peter_sees(lambda s: "message-retract" in s.xml
                              and self.thread_xmpp_id in s.xml)

    async def john_shares_file(self) -> None:
        content = f"quarter,revenue\nQ3,42 ({self.run_id})\n".encode()
        upload = await self.slack("files.getUploadURLExternal", filename="q3.csv",
                                  length=len(content))
        await self.http.post(upload["upload_url"], content=content)
        await self.slack("files.completeUploadExternal", channel_id=self.channel,
                         files=json.dumps([{"id": upload["file_id"], "title": "q3.csv"}]))
        got = await self.peter_sees(lambda s: "jabber:x:oob" in s.xml)
        url = got.body.strip().split()[-1]
        fetched = await self.http.get(url)
        if fetched.content != content:
            raise AssertionError(f"the file link gave HTTP {fetched.status_code}, not the file")

    async def peter_shares_file(self) -> None:
        url = self.info.sandbox + "/avatars/peter.png"
        await self.peter_sends(
            f"<message type='chat' to='{self.info.john}' id='f-{self.run_id}'>"
            f"<body>{xml_escape(url)}</body><x xmlns='jabber:x:oob'><url>{xml_escape(url)}"
            f"</url><desc>my avatar</desc></x></message>")
        await self.slack_sees(lambda m: any(f.get("name") == "peter.png"
                                            for f in m.get("files", [])))

    async def peter_goes_away(self) -> None:
        await self.peter_sends(f"<presence><show>away</show><status>lunch {self.run_id}"
                               f"</status></presence>")
        while True:
            info = await self.slack("conversations.info", channel=self.channel)
            if f"lunch {self.run_id}" in info["channel"]["topic"]["value"]:
                return
            await trio.sleep(POLL)

    async def john_goes_away(self) -> None:
        await self.slack("users.setPresence", presence="away")
        try:
            await self.peter_sees(lambda s: "<show>away</show>" in s.xml, kind="presence")
        finally:
            await self.slack("users.setPresence", presence="auto")

    async def peter_reads_vcard(self) -> None:
        await self.peter_sends(f"<iq type='get' to='{self.info.john}' id='v-{self.run_id}'>"
                               f"<vCard xmlns='vcard-temp'/></iq>")
        got = await self.peter_sees(lambda s: s.id == f"v-{self.run_id}", kind="iq")
        if "John Smith" not in got.xml:
            raise AssertionError("John's vCard has no name")

    async def typing_and_receipts(self) -> None:
        await self.peter_sends(f"<message type='chat' to='{self.info.john}'>"
                               f"<composing xmlns='http://jabber.org/protocol/chatstates'/>"
                               f"</message>")
        await self.peter_sends(f"<message type='chat' to='{self.info.john}'>"
                               f"<received xmlns='urn:xmpp:receipts' id='{self.john_xmpp_id}'/>"
                               f"</message>")
        # a ping round trip proves both were handled without an error bounce
        await self.peter_sends(f"<iq type='get' to='{self.info.john.partition('@')[2]}' "
                               f"id='ping-{self.run_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
        while True:
            stanza = await self.peter.next_stanza("iq", timeout=STEP_TIMEOUT)
            if stanza.id == f"ping-{self.run_id}":
                return

    async def remove_contact(self) -> None:
        await self.command(f"remove {self.info.peter}")
        # Peter's server takes John's unsubscribe(d) in: his client sees John go offline
        # (and a roster update), as with any contact who removes you
        while True:
            stanza = await self.peter.next_stanza("any", timeout=STEP_TIMEOUT)
            if self.info.john in stanza.xml and (
                    stanza.type in ("unsubscribe", "unsubscribed", "unavailable")
                    or "jabber:iq:roster" in stanza.xml):
                return


async def run_script(config: Config, out: TextIO) -> int:
    """Run the tour against the running demo; 0 when every step was observed."""
    try:
        info = read_demo_info(config)
    except (DemoUnavailable, ConfigError, KeyError) as exc:
        out.write(f"interlink demo: {exc}\n")
        return 2
    out.write(f"Tour: {info.john} (Slack) and {info.peter} (XMPP)\n")
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        try:
            async with open_client(info.peter, info.peter_password, info.xmpp_host,
                                   info.xmpp_port) as peter:
                tour = Tour(info, http, peter, out)
                for number, (title, step) in enumerate(tour.steps(), start=1):
                    try:
                        with trio.fail_after(STEP_TIMEOUT):
                            await step()
                    except (trio.TooSlowError, AssertionError, httpx.HTTPError) as exc:
                        detail = "not observed in time" if isinstance(
                            exc, trio.TooSlowError) else str(exc)
                        out.write(f"  ✗ {number:2}. {title}\n       {detail}\n")
                        return 1
                    out.write(f"  ✓ {number:2}. {title}\n")
                    out.flush()
        except ConnectionError as exc:
            out.write(f"interlink demo: cannot log in to XMPP as {info.peter}: {exc}\n")
            return 2
    out.write("Every step was observed on the other side.\n")
    return 0
