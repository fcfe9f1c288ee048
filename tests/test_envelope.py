"""The envelope codec: the one thing that crosses nodes."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import Envelope, EnvelopeError, Route, decode_envelope, encode_envelope
from backends.envelope import ENVELOPE_VERSION

FRAME = b'{"type":"text","payload":"hi","timestamp":1}'


def pack(data: dict[str, object]) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope(Route.CHANNEL, FRAME, channel="chat:room1", origin="n1"),
        Envelope(Route.BROADCAST, FRAME, origin="n1"),
        Envelope(Route.DIRECT, FRAME, connection_id="c-1", origin="n2"),
        Envelope(
            Route.CHANNEL,
            FRAME,
            channel="名前 with.dots*>",
            only_to=frozenset({"a", "b"}),
            exclude=frozenset({"c"}),
            origin="n3",
            trace={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        ),
        Envelope(Route.BROADCAST, b"", only_to=frozenset(), origin=""),
    ],
)
def test_round_trip(envelope: Envelope) -> None:
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_frame_bytes_cross_unchanged() -> None:
    frame = "ü€😀".encode() + bytes(range(256))
    decoded = decode_envelope(encode_envelope(Envelope(Route.BROADCAST, frame)))
    assert decoded.frame == frame


def test_empty_only_to_means_nobody_and_survives_the_wire() -> None:
    envelope = Envelope(Route.BROADCAST, FRAME, only_to=frozenset())
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded.only_to == frozenset()


def test_envelope_is_a_small_versioned_map() -> None:
    data = msgpack.unpackb(encode_envelope(Envelope(Route.CHANNEL, FRAME, channel="c", origin="n")))
    assert data["v"] == ENVELOPE_VERSION == 1
    assert data["f"] == FRAME
    assert data["c"] == "c"


def test_unknown_keys_from_a_newer_writer_are_ignored() -> None:
    raw = pack({"v": 1, "r": 2, "f": FRAME, "n": "n1", "future": [1, 2, 3]})
    assert decode_envelope(raw) == Envelope(Route.BROADCAST, FRAME, origin="n1")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"\xc1", "not msgpack"),
        (pack([1, 2]), "not a map"),  # type: ignore[arg-type]
        (pack({"r": 2, "f": FRAME}), "no version"),
        (pack({"v": 2, "r": 2, "f": FRAME}), "future version"),
        (pack({"v": 0, "r": 2, "f": FRAME}), "version 0"),
        (pack({"v": "1", "r": 2, "f": FRAME}), "version as text"),
        (pack({"v": 1, "r": 9, "f": FRAME}), "unknown route"),
        (pack({"v": 1, "r": 2, "f": "text, not bytes"}), "frame not bytes"),
        (pack({"v": 1, "r": 2}), "no frame"),
        (pack({"v": 1, "r": 1, "f": FRAME}), "channel route without channel"),
        (pack({"v": 1, "r": 3, "f": FRAME}), "direct route without id"),
        (pack({"v": 1, "r": 1, "f": FRAME, "c": 5}), "channel not a string"),
        (pack({"v": 1, "r": 2, "f": FRAME, "o": "abc"}), "only_to not a list"),
        (pack({"v": 1, "r": 2, "f": FRAME, "x": [1, 2]}), "exclude of numbers"),
        (pack({"v": 1, "r": 2, "f": FRAME, "t": {"a": 1}}), "trace values not strings"),
        (pack({"v": 1, "r": 2, "f": FRAME, "n": 7}), "origin not a string"),
    ],
)
def test_unreadable_envelopes_raise_envelope_error(raw: bytes, why: str) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(raw)


def test_envelope_error_has_a_code() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(b"")
    assert caught.value.code == "bad_envelope"


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_envelope_error(raw: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(raw)


@settings(max_examples=100, deadline=None)
@given(
    route=st.sampled_from(list(Route)),
    frame=st.binary(max_size=64),
    name=st.text(min_size=1, max_size=20),
    ids=st.none() | st.frozensets(st.text(max_size=8), max_size=3),
)
def test_any_valid_envelope_round_trips(
    route: Route, frame: bytes, name: str, ids: frozenset[str] | None
) -> None:
    envelope = Envelope(
        route,
        frame,
        channel=name if route is Route.CHANNEL else None,
        connection_id=name if route is Route.DIRECT else None,
        only_to=ids,
        exclude=ids or None,
        origin=name,
    )
    assert decode_envelope(encode_envelope(envelope)) == envelope
