"""The two broker transports on real brokers, below the cluster logic.

What the cluster relies on: ``subscribe`` returns only once the broker holds
the interest (also for a second caller racing the first), channel subjects
carry hostile names as one plain token, and messages arrive in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from support.brokers import Broker

from backends import BackplaneUnavailable
from backends.nats import NatsTransport
from backends.redis import RedisTransport
from backends.transport import Transport

pytestmark = pytest.mark.cluster


@pytest.fixture
async def transport(
    shared_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Transport]:
    broker: Broker = request.getfixturevalue(f"{shared_backend}_broker")
    cluster = f"tt{uuid.uuid4().hex[:10]}"
    made: Transport = (
        NatsTransport(broker.url, cluster, "unit")
        if shared_backend == "nats"
        else RedisTransport(broker.url, cluster, "unit")
    )
    await made.connect()
    yield made
    await made.close()


async def test_a_second_subscriber_waits_for_the_same_confirmation(
    transport: Transport, shared_backend: str, request: pytest.FixtureRequest
) -> None:
    subject = transport.channel_subject("a.*")
    first = asyncio.create_task(transport.subscribe(subject))
    second = asyncio.create_task(transport.subscribe(subject))
    await asyncio.sleep(0)  # both are in flight
    await second
    if shared_backend == "redis":
        broker: Broker = request.getfixturevalue("redis_broker")
        client = aioredis.Redis.from_url(broker.url)
        try:
            assert await client.pubsub_numsub(subject) == [(subject.encode(), 1)]
        finally:
            await client.aclose()
    else:
        # The second caller returned only after the first one's flush.
        assert first.done()
    await first


async def test_channel_subjects_deliver_only_their_own_messages_in_order(
    transport: Transport,
) -> None:
    received: list[tuple[str, bytes]] = []
    expected = 20 * 6
    all_there = asyncio.Event()

    def on_message(subject: str, data: bytes) -> None:
        received.append((subject, data))
        if len(received) >= expected:
            all_there.set()

    transport.on_message = on_message
    names = ["a.b", "a.*", "a.>", ">", "*", "x:*", "ünï"]
    for name in names[1:]:  # everything but "a.b"
        await transport.subscribe(transport.channel_subject(name))
    # The transport's own publishes are not echoed on NATS, so publish from a
    # second transport on the same cluster.
    other: Transport = type(transport)(transport.url, transport.cluster, "other")
    await other.connect()
    try:
        for index in range(20):
            for name in names:
                await other.publish(other.channel_subject(name), f"{name}|{index}".encode())
        assert expected == 20 * (len(names) - 1)
        await asyncio.wait_for(all_there.wait(), 5)
        await asyncio.sleep(0.1)  # time for anything extra to arrive
    finally:
        await other.close()
    assert len(received) == 20 * (len(names) - 1)
    for name in names[1:]:
        subject = transport.channel_subject(name)
        mine = [data.decode() for s, data in received if s == subject]
        assert mine == [f"{name}|{i}" for i in range(20)], name
    assert not [d for _, d in received if d.startswith(b"a.b|")]


async def test_publish_after_close_is_unavailable(transport: Transport) -> None:
    await transport.close()
    assert not transport.connected
    with pytest.raises(BackplaneUnavailable):
        await transport.publish(transport.subject("all"), b"x")
    with pytest.raises(BackplaneUnavailable):
        await transport.subscribe(transport.subject("later"))
