"""The views of Slack's payloads (pure, table-driven): what decodes, what is refused, where."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.slack._views import (
    MALFORMED_ENVELOPE,
    EventsBody,
    Malformed,
    SlackEvent,
    SlackUser,
    SocketFrame,
    UploadCompleted,
    read_command_form,
    read_events_body,
    read_frame,
)


def callback(event: Any, **extra: Any) -> bytes:
    return json.dumps({"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
                       "event": event, **extra}).encode()


@pytest.mark.parametrize(("data", "refused"), [
    (b'{"type": "event_callback", ', Malformed("invalid_json")),
    (b"[1, 2, 3]", Malformed("invalid_body", "$")),
    (b'{"type": 7}', Malformed("invalid_body", "$.type")),
    (b'{"challenge": "no type"}', Malformed("invalid_body", "$")),
    (b'{"type": "url_verification", "challenge": 5}',
     Malformed("invalid_challenge", "$.challenge")),
    (callback("nonsense"), Malformed("invalid_event", "$.event")),
    (callback({"type": "message", "ts": 1.5}), Malformed("invalid_event", "$.event.ts")),
    (callback({"type": "message", "files": [{"size": "big"}]}),
     Malformed("invalid_event", "$.event.files[0].size")),
    (callback({"type": "user_change", "user": {"profile": {"email": False}}}),
     Malformed("invalid_event", "$.event.user.profile.email")),
    (callback({"type": "message"}, event_id=5), Malformed("invalid_event", "$.event_id")),
    (json.dumps({"type": "app_rate_limited", "team_id": ["T1"]}).encode(),
     Malformed("invalid_event", "$.team_id")),
])
def test_bodies_that_break_a_read_field_are_refused_with_its_path(
        data: bytes, refused: Malformed) -> None:
    assert read_events_body(data) == refused


def test_a_refusal_names_the_path_never_the_value() -> None:
    refused = read_events_body(callback({"type": "message", "text": ["secret words"]}))
    assert refused == Malformed("invalid_event", "$.event.text")
    assert "secret" not in repr(refused)


def test_user_is_an_id_in_messages_and_an_object_in_user_change() -> None:
    message = read_events_body(callback({"type": "message", "user": "U1", "text": "hi"}))
    change = read_events_body(callback({"type": "user_change",
                                        "user": {"id": "U2", "profile": {"email": "a@b"}}}))
    assert isinstance(message, EventsBody) and isinstance(change, EventsBody)
    assert message.event is not None and change.event is not None
    assert (message.event.user, message.event.user_id) == ("U1", "U1")
    assert isinstance(change.event.user, SlackUser) and change.event.user_id == "U2"


def test_unknown_fields_and_unread_shapes_are_harmless() -> None:
    """Slack's future fields are skipped; events the adapter does not read pass as their type."""
    extra = read_events_body(callback({"type": "message", "text": "hi", "new": {"x": [1]},
                                       "ts": "1.0"}, authorizations=[{"team_id": "T1"}],
                                      brand_new_field=3))
    assert isinstance(extra, EventsBody) and extra.event is not None
    assert (extra.event.text, extra.event.ts) == ("hi", "1.0")
    created = read_events_body(callback({"type": "channel_created",
                                         "channel": {"id": "C1", "name": "new"}}))
    assert created == EventsBody(type="event_callback", team_id="T1", event_id="Ev1",
                                 event=SlackEvent(type="channel_created"))
    mystery = read_events_body(b'{"type": "mystery", "event": "anything", "event_id": 5}')
    assert mystery == EventsBody(type="mystery")


@pytest.mark.parametrize(("data", "expected"), [
    (b"not json", Malformed("invalid_json")),
    (b'"a string"', Malformed("invalid_frame", "$")),
    (b'{"envelope_id": 5, "type": "events_api"}', Malformed("invalid_frame", "$.envelope_id")),
    (b'{"envelope_id": "e1", "type": "events_api", "retry_attempt": "x"}',
     SocketFrame(type=MALFORMED_ENVELOPE, envelope_id="e1", reason="$.retry_attempt")),
    (b'{"type": "disconnect", "reason": "warning", "debug_info": {"host": "h"}}',
     SocketFrame(type="disconnect", reason="warning")),
])
def test_socket_mode_frames(data: bytes, expected: SocketFrame | Malformed) -> None:
    assert read_frame(data) == expected


def test_an_envelopes_payload_stays_raw_until_its_type_is_known() -> None:
    frame = read_frame(json.dumps({
        "envelope_id": "e1", "type": "slash_commands", "accepts_response_payload": True,
        "payload": {"command": "/interlink", "text": "list", "is_enterprise_install": False},
    }))
    assert isinstance(frame, SocketFrame) and frame.accepts_response_payload
    assert isinstance(frame.payload, msgspec.Raw)
    assert read_command_form(frame.payload) == {
        "command": "/interlink", "text": "list", "is_enterprise_install": "False"}
    assert read_command_form(msgspec.Raw(b'"nonsense"')) is None


def test_an_uploaded_file_says_which_message_shares_it() -> None:
    answer = msgspec.json.decode(json.dumps({"ok": True, "files": [{
        "id": "F1", "shares": {"private": {"G1": [{"ts": "2.0", "reply_count": 0}]}}}]}),
        type=UploadCompleted)
    (file,) = answer.files
    assert (file.message_ts("G1"), file.message_ts("G2")) == ("2.0", "")
