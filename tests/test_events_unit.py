"""Domain events without a broker: the wire format other services publish,
and the settings that switch the bridge on."""

from __future__ import annotations

import json

import pytest

from service import ChannelNameInvalid, Settings, SettingsError
from service.errors import MessageInvalid
from service.events import DomainEvent


def test_wire_format_round_trip() -> None:
    event = DomainEvent("order.shipped", {"id": 1})
    assert json.loads(event.to_wire("orders")) == {
        "name": "order.shipped", "payload": {"id": 1}, "channel": "orders",
    }
    assert json.loads(event.to_wire()) == {"name": "order.shipped", "payload": {"id": 1}}
    assert DomainEvent.from_wire(event.to_wire()) == (event, None)
    assert DomainEvent.from_wire(event.to_wire("orders")) == (event, "orders")
    assert DomainEvent.from_wire('{"name": "a"}') == (DomainEvent("a"), None)


def test_unknown_fields_are_ignored() -> None:
    assert DomainEvent.from_wire(b'{"name": "a", "payload": 2, "v": 1}') == (
        DomainEvent("a", 2), None
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"payload": 1}', '"name"'),
        (b'{"name": 5}', '"name"'),
        (b'{"name": ""}', '"name"'),
        (b'{"name": "a", "channel": ""}', '"channel"'),
        (b'{"name": "a", "channel": "a\\u0000b"}', '"channel"'),
        (b'{"name": "' + b"x" * 300 + b'"}', "longer than"),
    ],
)
def test_bad_messages_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(MessageInvalid) as exc:
        DomainEvent.from_wire(body)
    assert reason in str(exc.value)


def test_event_names_and_payloads_are_checked() -> None:
    with pytest.raises(MessageInvalid):
        DomainEvent("")
    with pytest.raises(MessageInvalid):
        DomainEvent(None)  # type: ignore[arg-type]
    with pytest.raises(MessageInvalid):
        DomainEvent("x", object()).to_wire()
    with pytest.raises(ChannelNameInvalid):
        DomainEvent("x").to_wire("")


def test_events_subject_setting() -> None:
    assert Settings.from_sources({}, {}).events_subject == ""
    settings = Settings.from_sources(
        {"backend": "nats", "events_subject": "app.events.>"}, {}
    )
    assert settings.events_subject == "app.events.>"
    env = {"RTFORGE_BACKEND": "redis", "RTFORGE_EVENTS_SUBJECT": "app:events"}
    assert Settings.from_sources({}, env).events_subject == "app:events"
    with pytest.raises(SettingsError, match="--events-subject needs --backend nats or redis"):
        Settings.from_sources({"events_subject": "app.events"}, {})
    with pytest.raises(SettingsError, match="--events-subject"):
        Settings.from_sources({"backend": "nats", "events_subject": "has space"}, {})


def test_demo_setting() -> None:
    assert Settings.from_sources({}, {}).demo is True
    for raw, value in (("off", False), ("0", False), ("no", False), ("ON", True), ("1", True)):
        assert Settings.from_sources({"demo": raw}, {}).demo is value
    assert Settings.from_sources({}, {"RTFORGE_DEMO": "false"}).demo is False
    with pytest.raises(SettingsError, match="--demo"):
        Settings.from_sources({"demo": "maybe"}, {})
