"""The cost of decoding one Slack event: the dict path before issue #21 item 6, and the views.

Run: ``.venv/bin/python -m bench.slack_decode [--events N] [--rounds R]`` (a few seconds).

Both paths start from the same bytes (Slack's sample payloads in
``tests/slack_sandbox/golden``, filled with real-looking values so that every
event is translated in full, not ignored early) and end with the same
canonical events, checked before timing:

- **before** (the baseline, measured in the same run): ``msgspec.json.decode``
  into ``dict[str, Any]``, then the translator as it was, reading the dicts
  with ``.get`` and ``isinstance`` (a frozen copy below, :func:`legacy_decode_event`);
- **after**: :func:`adapters.slack._views.read_events_body` straight into the
  view Structs, then :func:`adapters.slack._translate.decode_event`.

Each is reported twice: the edge decode alone (bytes to dict / to view) and
decode plus translation. Times are the best of ``rounds`` runs over
``events`` events (the payloads taken in turn), in microseconds per event.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from adapters.slack.decoding import (
    PLATFORM,
    Decoded,
    EventsBody,
    Revoked,
    SlackLookup,
    blocks_to_rich,
    canonical_id_for,
    decode_event,
    emoji_from_slack,
    message_key,
    mrkdwn_to_rich,
    read_events_body,
)
from engine import (
    Address,
    Edit,
    Event,
    FileShare,
    Ignored,
    Message,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    RichText,
    SessionRecord,
    session_id_for,
    to_plain_text,
)

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "slack_sandbox" / "golden"
TEAM, CHANNEL, USER, TS, ROOT_TS = "T0ACME", "G0PRIV", "U0JOHN", "1700000000.000100", \
    "1699999999.000900"
JOHN = Address.parse("john@acme.test")
PETER = Address.parse("peter@widget.test")
SESSION = SessionRecord(session_id=session_id_for(JOHN, PETER), a=JOHN, b=PETER,
                        conversation_ids={"slack": CHANNEL})
#: values for the sample payloads' empty strings, by key
FILLS = {"channel": CHANNEL, "user": USER, "item_user": USER, "ts": TS, "event_ts": TS,
         "thread_ts": ROOT_TS, "deleted_ts": ROOT_TS, "reaction": "tada", "team": TEAM,
         "team_id": TEAM, "text": "hello *world*, see <https://widget.test|this>",
         "name": "plan.pdf", "title": "the plan", "mimetype": "application/pdf",
         "url_private": "https://files.slack.com/p/plan",
         "url_private_download": "https://files.slack.com/d/plan", "real_name": "John Smith",
         "email": "john@acme.test", "image_192": "https://img/j192"}
Json = dict[str, Any]
#: message subtypes that carry a person's new message (as in the translator)
_NEW_MESSAGE_SUBTYPES = frozenset({None, "", "thread_broadcast", "file_share", "me_message"})


class EveryoneLookup:
    """Directory reads that know every user, channel and message: nothing is ignored early."""

    def address_of(self, team_id: str, user_id: str) -> Address | None:
        return JOHN

    def user_id_of(self, address: Address) -> str | None:
        return USER

    def session_of(self, channel_id: str) -> SessionRecord | None:
        return SESSION

    def canonical_id(self, channel_id: str, ts: str) -> str | None:
        return "m-root"

    def is_own_bot(self, team_id: str, *, user_id: str = "", bot_id: str = "",
                   app_id: str = "") -> bool:
        return False


# -- the path before: dicts read with .get (frozen copy of the translator it replaced) ---

def legacy_decode_event(body: Json, lookup: SlackLookup) -> Decoded:
    """Translate one Events API body (``event_callback``) into canonical events."""
    if body.get("type") != "event_callback":
        return Ignored(f"body:{body.get('type')}")
    event = body.get("event")
    team_id = body.get("team_id") or ""
    if not isinstance(event, dict) or not isinstance(team_id, str):
        return Ignored("malformed")
    kind = event.get("type")
    if kind == "message":
        return _decode_message(team_id, event, lookup)
    if kind in ("reaction_added", "reaction_removed"):
        return _decode_reaction(team_id, event, lookup)
    if kind == "user_change":
        return _decode_user_change(team_id, event, lookup)
    if kind == "app_uninstalled":
        return Revoked(team_id, kind)
    if kind == "tokens_revoked":
        tokens = event.get("tokens")
        bots = tokens.get("bot") if isinstance(tokens, dict) else None
        # Only the bot token matters to Interlink; a person's revoked token does not.
        return Revoked(team_id, kind) if bots else Ignored("user-tokens-revoked")
    return Ignored(f"event:{kind}")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _participants(channel: str, user: str, team_id: str,
                  lookup: SlackLookup) -> tuple[Address, Address, SessionRecord] | Ignored:
    """(source, destination, session) for something ``user`` did in ``channel``."""
    session = lookup.session_of(channel)
    if session is None:
        return Ignored("not-a-federated-conversation")
    source = lookup.address_of(team_id, user)
    if source is None:
        return Ignored("unknown-user")
    if source == session.a:
        return source, session.b, session
    if source == session.b:
        return source, session.a, session
    return Ignored("not-a-participant")


def _body(message: Json, lookup: SlackLookup, team_id: str) -> RichText:
    def address_of(user_id: str) -> str | None:
        found = lookup.address_of(team_id, user_id)
        return None if found is None else str(found)

    blocks = message.get("blocks")
    if isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "rich_text"
                                        for b in blocks):
        return blocks_to_rich([b for b in blocks if isinstance(b, dict)], address_of)
    return mrkdwn_to_rich(_str(message.get("text")), address_of)


def _is_own(team_id: str, message: Json, lookup: SlackLookup) -> bool:
    return lookup.is_own_bot(team_id, user_id=_str(message.get("user")),
                             bot_id=_str(message.get("bot_id")),
                             app_id=_str(message.get("app_id")))


def _decode_message(team_id: str, event: Json, lookup: SlackLookup) -> Decoded:
    subtype = event.get("subtype")
    channel = _str(event.get("channel"))
    if subtype == "message_changed":
        return _decode_edit(team_id, channel, event, lookup)
    if subtype == "message_deleted":
        return _decode_delete(team_id, channel, event, lookup)
    if _is_own(team_id, event, lookup):
        return Ignored("own-bot")
    if subtype == "bot_message" or event.get("bot_id"):
        return Ignored("bot-message")
    if subtype not in _NEW_MESSAGE_SUBTYPES:
        return Ignored(f"subtype:{subtype}")
    ts = _str(event.get("ts"))
    if not channel or not ts:
        return Ignored("malformed")
    parties = _participants(channel, _str(event.get("user")), team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    common: dict[str, Any] = {
        "source": source, "destination": destination, "session_id": session.session_id,
        "timestamp": _timestamp(ts)}
    canonical = canonical_id_for(team_id, channel, ts)
    platform_ids = {PLATFORM: message_key(channel, ts)}
    thread_ts = _str(event.get("thread_ts"))
    thread_id = lookup.canonical_id(channel, thread_ts) if thread_ts and thread_ts != ts else None
    body = _body(event, lookup, team_id)
    files = [f for f in event.get("files") or [] if isinstance(f, dict)]
    if not files:
        return [Message(event_id=canonical, platform_ids=platform_ids, body=body,
                        text=to_plain_text(body), thread_id=thread_id, **common)]
    shares: list[Event] = []
    caption = to_plain_text(body)
    for index, file in enumerate(files):
        url = _str(file.get("url_private_download")) or _str(file.get("url_private"))
        if not url:
            continue
        first = not shares
        shares.append(FileShare(
            event_id=canonical if first else f"{canonical}-{index}",
            platform_ids=platform_ids if first else {},
            name=_str(file.get("name")) or _str(file.get("title")) or "file",
            size=file["size"] if isinstance(file.get("size"), int) else 0,
            media_type=_str(file.get("mimetype")) or "application/octet-stream",
            url=url, caption=caption if first else "", **common))
    return shares or Ignored("file-without-url")


def _decode_edit(team_id: str, channel: str, event: Json, lookup: SlackLookup) -> Decoded:
    message = event.get("message")
    if not isinstance(message, dict):
        return Ignored("malformed")
    if _is_own(team_id, message, lookup):
        return Ignored("own-bot")
    previous = event.get("previous_message")
    if isinstance(previous, dict) and previous.get("text") == message.get("text") \
            and previous.get("blocks") == message.get("blocks"):
        return Ignored("unchanged")  # unfurls and other attachment-only changes
    ts = _str(message.get("ts"))
    target = lookup.canonical_id(channel, ts)
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, _str(message.get("user")), team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    body = _body(message, lookup, team_id)
    edited = message.get("edited")
    edited_ts = _str(edited.get("ts")) if isinstance(edited, dict) else ""
    return [Edit(source=source, destination=destination, session_id=session.session_id,
                 target_id=target, body=body, text=to_plain_text(body),
                 timestamp=_timestamp(edited_ts or _str(event.get("event_ts")) or ts))]


def _decode_delete(team_id: str, channel: str, event: Json, lookup: SlackLookup) -> Decoded:
    previous = event.get("previous_message")
    previous = previous if isinstance(previous, dict) else {}
    if _is_own(team_id, previous, lookup):
        return Ignored("own-bot")
    target = lookup.canonical_id(channel, _str(event.get("deleted_ts")))
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, _str(previous.get("user")), team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    return [Retract(source=source, destination=destination, session_id=session.session_id,
                    target_id=target, timestamp=_timestamp(_str(event.get("event_ts"))))]


def _decode_reaction(team_id: str, event: Json, lookup: SlackLookup) -> Decoded:
    item = event.get("item")
    if not isinstance(item, dict) or item.get("type") != "message":
        return Ignored("reaction-not-on-message")
    if _is_own(team_id, event, lookup):
        return Ignored("own-bot")
    channel, ts = _str(item.get("channel")), _str(item.get("ts"))
    target = lookup.canonical_id(channel, ts)
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, _str(event.get("user")), team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    name = _str(event.get("reaction"))
    if not name:
        return Ignored("malformed")
    kind = ReactionAdd if event.get("type") == "reaction_added" else ReactionRemove
    return [kind(source=source, destination=destination, session_id=session.session_id,
                 target_id=target, emoji=emoji_from_slack(name),
                 timestamp=_timestamp(_str(event.get("event_ts"))))]


def _decode_user_change(team_id: str, event: Json, lookup: SlackLookup) -> Decoded:
    user = event.get("user")
    if not isinstance(user, dict):
        return Ignored("malformed")
    address = lookup.address_of(_str(user.get("team_id")) or team_id, _str(user.get("id")))
    if address is None:
        return Ignored("unknown-user")
    return [_legacy_profile(address, user)]


def _legacy_profile(address: Address, user: Json, *, timestamp: float = 0.0) -> Profile:
    profile = user.get("profile")
    profile = profile if isinstance(profile, dict) else {}
    name = (_str(profile.get("real_name")) or _str(user.get("real_name"))
            or _str(profile.get("display_name")) or _str(user.get("name")))
    avatar = next((_str(profile.get(k)) for k in ("image_192", "image_512", "image_72",
                                                  "image_original") if profile.get(k)), "")
    return Profile(source=address, destination=address, name=name,
                   email=_str(profile.get("email")), title=_str(profile.get("title")),
                   avatar_url=avatar, timestamp=timestamp)


def _timestamp(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


# -- the measurement ---------------------------------------------------------------------


def payloads() -> list[bytes]:
    """Slack's sample event_callback bodies, filled in, as the bytes Slack sends."""
    found = []
    for path in sorted(GOLDEN.glob("*Payload.json")):
        body = _filled(json.loads(path.read_text()), "")
        body.update(type="event_callback", team_id=TEAM, event_id=f"Ev{path.stem}")
        found.append(msgspec.json.encode(body))
    return found


def _filled(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _filled(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, key) for v in value]
    if value == "" and key in FILLS:
        return FILLS[key]
    return value


_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def before_decode(data: bytes) -> Json:
    return _dict_decoder.decode(data)


def after_decode(data: bytes) -> EventsBody:
    view = read_events_body(data)
    assert isinstance(view, EventsBody)
    return view


def _per_event_us(work: Callable[[bytes], object], corpus: list[bytes], events: int,
                  rounds: int) -> float:
    batch = (corpus * (events // len(corpus) + 1))[:events]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for data in batch:
            work(data)
        best = min(best, time.perf_counter_ns() - start)
    return best / events / 1000


def _comparable(decoded: Decoded) -> object:
    if isinstance(decoded, list):
        return [msgspec.to_builtins(msgspec.structs.replace(e, event_id="")
                                    if not isinstance(e, Message | FileShare) else e)
                for e in decoded]
    return type(decoded).__name__, msgspec.to_builtins(decoded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args(argv)
    corpus = payloads()
    lookup = EveryoneLookup()
    translated = 0
    for data in corpus:  # the same canonical events from both paths, or no timing
        old = legacy_decode_event(before_decode(data), lookup)
        new = decode_event(after_decode(data), lookup)
        assert _comparable(old) == _comparable(new), (data[:80], old, new)
        translated += isinstance(new, list | Revoked)
    rows = [
        ("edge decode (bytes -> dict / view)", before_decode, after_decode),
        ("decode + translate (-> canonical)",
         lambda d: legacy_decode_event(before_decode(d), lookup),
         lambda d: decode_event(after_decode(d), lookup)),
    ]
    print(f"{len(corpus)} sample payloads ({translated} translated, the others ignored by "
          f"type), {options.events} events, best of {options.rounds} rounds")
    print(f"{'':38} {'before µs':>10} {'after µs':>10} {'after/before':>13}")
    for name, before, after in rows:
        old_us = _per_event_us(before, corpus, options.events, options.rounds)
        new_us = _per_event_us(after, corpus, options.events, options.rounds)
        print(f"{name:38} {old_us:10.2f} {new_us:10.2f} {new_us / old_us:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
