"""WebSocketMessage: constructors, the JSON frame shape and parsing."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import ConnectionId, MessageInvalid, MessageType, WebSocketMessage


def frame(message: WebSocketMessage) -> dict[str, Any]:
    data = json.loads(message.to_json_string())
    assert isinstance(data, dict)
    return data


def test_message_types_are_the_contract_names() -> None:
    assert {t.value for t in MessageType} == {
        "text", "json", "event", "system", "ping", "pong", "binary",
    }


def test_text_message_frame() -> None:
    data = frame(WebSocketMessage.text("Hello"))
    assert data["type"] == "text"
    assert data["payload"] == "Hello"
    assert isinstance(data["timestamp"], int)
    assert abs(data["timestamp"] - time.time()) < 5
    assert "metadata" not in data
    assert "channel" not in data


def test_json_message_carries_any_json_value() -> None:
    data = {"key": "value", "list": [1, 2.5, None, True], "nested": {"a": "ü"}}
    assert frame(WebSocketMessage.json(data))["payload"] == data
    assert frame(WebSocketMessage.json([1, 2]))["payload"] == [1, 2]
    assert frame(WebSocketMessage.json(None))["payload"] is None


def test_event_message_payload_is_event_and_data() -> None:
    data = frame(WebSocketMessage.event("user.joined", {"userId": 42}))
    assert data["type"] == "event"
    assert data["payload"] == {"event": "user.joined", "data": {"userId": 42}}


def test_system_message_payload_is_text() -> None:
    data = frame(WebSocketMessage.system("Server maintenance in 5 minutes"))
    assert data == {
        "type": "system",
        "payload": "Server maintenance in 5 minutes",
        "timestamp": data["timestamp"],
    }


@pytest.mark.parametrize("message", [WebSocketMessage.ping(), WebSocketMessage.pong()])
def test_ping_and_pong_frames_omit_payload(message: WebSocketMessage) -> None:
    data = frame(message)
    assert set(data) == {"type", "timestamp"}
    assert data["type"] in ("ping", "pong")


def test_binary_payload_is_base64_on_the_wire_and_round_trips() -> None:
    message = WebSocketMessage.binary(b"\x00\xffdata")
    assert frame(message)["payload"] == "AP9kYXRh"
    parsed = WebSocketMessage.from_json_string(message.to_json_string())
    assert parsed.type is MessageType.BINARY
    assert parsed.payload == b"\x00\xffdata"


def test_with_metadata_merges_and_leaves_the_original_alone() -> None:
    plain = WebSocketMessage.text("Hello")
    tagged = plain.with_metadata({"priority": "high"})
    both = tagged.with_metadata({"source": "test"})
    assert frame(tagged)["metadata"] == {"priority": "high"}
    assert frame(both)["metadata"] == {"priority": "high", "source": "test"}
    assert "metadata" not in frame(plain)


def test_empty_metadata_is_omitted() -> None:
    assert "metadata" not in frame(WebSocketMessage.text("x").with_metadata({}))


def test_channel_is_present_only_when_delivered_through_a_channel() -> None:
    message = WebSocketMessage.json({"a": 1})
    assert frame(message.with_channel("chat:room1"))["channel"] == "chat:room1"
    assert "channel" not in frame(message)


def test_connection_id_is_encoded_as_a_plain_string() -> None:
    connection_id = ConnectionId.new()
    data = frame(WebSocketMessage.json({"id": connection_id}))
    assert data["payload"] == {"id": str(connection_id)}


def test_connection_ids_are_unique_uuid_strings() -> None:
    ids = {ConnectionId.new() for _ in range(100)}
    assert len(ids) == 100
    assert all(isinstance(i, str) and len(i) == 36 for i in ids)


@pytest.mark.parametrize(
    "message",
    [
        WebSocketMessage.text("Hello"),
        WebSocketMessage.json({"a": [1, 2, {"b": None}]}),
        WebSocketMessage.event("user.left", "Alice"),
        WebSocketMessage.system("note"),
        WebSocketMessage.ping(),
        WebSocketMessage.pong(),
        WebSocketMessage.text("x").with_metadata({"k": 1}).with_channel("c"),
    ],
)
def test_to_json_string_round_trips(message: WebSocketMessage) -> None:
    assert WebSocketMessage.from_json_string(message.to_json_string()) == message


def test_from_json_string_fills_in_a_missing_timestamp() -> None:
    parsed = WebSocketMessage.from_json_string('{"type": "text", "payload": "hi"}')
    assert abs(parsed.timestamp - time.time()) < 5


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{",
        "[1, 2]",
        '"text"',
        "null",
        '{"payload": "no type"}',
        '{"type": "banana", "payload": 1}',
        '{"type": 5}',
        '{"type": "text", "payload": 42}',
        '{"type": "text"}',
        '{"type": "event", "payload": "no object"}',
        '{"type": "event", "payload": {"data": 1}}',
        '{"type": "event", "payload": {"event": "", "data": 1}}',
        '{"type": "text", "payload": "x", "metadata": [1]}',
        '{"type": "text", "payload": "x", "timestamp": "now"}',
        '{"type": "text", "payload": "x", "timestamp": true}',
        '{"type": "text", "payload": "x", "channel": 7}',
        '{"type": "binary", "payload": "not base64!"}',
    ],
)
def test_from_json_string_rejects_frames_of_unknown_shape(raw: str) -> None:
    with pytest.raises(MessageInvalid):
        WebSocketMessage.from_json_string(raw)


def test_message_invalid_is_a_value_error_with_a_wire_code() -> None:
    with pytest.raises(ValueError) as caught:
        WebSocketMessage.from_json_string("{")
    assert isinstance(caught.value, MessageInvalid)
    assert caught.value.code == "invalid_message"


def test_constructors_refuse_bad_arguments() -> None:
    with pytest.raises(MessageInvalid):
        WebSocketMessage.text(42)  # type: ignore[arg-type]
    with pytest.raises(MessageInvalid):
        WebSocketMessage.json({"not": object()})
    with pytest.raises(MessageInvalid):
        WebSocketMessage.event("")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(payload=json_values)
def test_any_json_payload_survives_the_wire(payload: Any) -> None:
    message = WebSocketMessage.json(payload)
    assert WebSocketMessage.from_json_string(message.to_json_string()).payload == payload


@settings(max_examples=100, deadline=None)
@given(raw=st.text(max_size=60))
def test_parsing_arbitrary_text_either_succeeds_or_raises_message_invalid(raw: str) -> None:
    with contextlib.suppress(MessageInvalid):
        WebSocketMessage.from_json_string(raw)
