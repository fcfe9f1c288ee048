"""The broker fixtures themselves: a real pub/sub round trip on each broker,
then an outage (stop/start on the same URL) that clients survive.

Whatever way the brokers were provisioned (see docs/testing.md), these tests
prove the handles do what the cluster tests rely on. The ``broker_restart``
tests need a broker the tests own; with ``RTFORGE_TEST_*_URL`` they fail and
say so."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError
from redis.exceptions import ConnectionError as RedisConnectionError
from support.brokers import Broker

pytestmark = pytest.mark.cluster
# support.brokers.RESTART_MARKER: the outage tests, which need a broker the tests own.
restarts_broker = pytest.mark.broker_restart


async def _quiet(exc: Exception) -> None:
    """nats-py error callback: connection errors are expected during an outage."""


def _subject() -> str:
    return f"rtforge.test.brokers.{uuid.uuid4().hex}"


async def _nats(url: str, **options: Any) -> NatsClient:
    return await nats.connect(url, connect_timeout=5, error_cb=_quiet, **options)


async def _nats_round_trip(client: NatsClient, payload: bytes) -> None:
    subject = _subject()
    sub = await client.subscribe(subject)
    await client.flush(timeout=5)
    await client.publish(subject, payload)
    msg = await sub.next_msg(timeout=5)
    assert msg.data == payload
    await sub.unsubscribe()


def _redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )


async def _redis_round_trip(client: aioredis.Redis, payload: str) -> None:
    channel = _subject()
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        assert await client.publish(channel, payload) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                assert msg["data"] == payload
                return
        pytest.fail(f"no message on {channel} within 5s")


async def test_nats_broker_round_trip(nats_broker: Broker) -> None:
    assert nats_broker.url.startswith("nats://")
    assert nats_broker.kind in ("env", "container", "binary")
    client = await _nats(nats_broker.url)
    try:
        await _nats_round_trip(client, b"hello")
    finally:
        await client.close()


async def test_redis_broker_round_trip_and_flush(redis_broker: Broker) -> None:
    assert redis_broker.url.startswith("redis://")
    assert redis_broker.kind in ("env", "container", "binary")
    client = _redis(redis_broker.url)
    try:
        assert await client.ping()
        await _redis_round_trip(client, "hello")
        key = f"rtforge:test:brokers:{uuid.uuid4().hex}"
        await client.set(key, "1")
        redis_broker.flush()
        assert await client.get(key) is None
    finally:
        await client.aclose()


@restarts_broker
async def test_nats_broker_outage_same_url(nats_broker: Broker) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    # A long-lived client that should ride out the outage...
    survivor = await _nats(
        nats_broker.url,
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        reconnected_cb=on_reconnect,
    )
    try:
        await _nats_round_trip(survivor, b"before")

        with nats_broker.outage():
            assert not nats_broker.is_up()
            with pytest.raises((NoServersError, OSError, TimeoutError)):
                # nats-py reads max_reconnect_attempts=0 as "forever".
                await asyncio.wait_for(
                    _nats(nats_broker.url, max_reconnect_attempts=1, reconnect_time_wait=0),
                    timeout=10,
                )

        assert nats_broker.is_up()
        # ...a brand-new client connects to the same URL...
        fresh = await _nats(nats_broker.url)
        try:
            await _nats_round_trip(fresh, b"after")
        finally:
            await fresh.close()
        # ...and the old one reconnected by itself.
        await asyncio.wait_for(reconnected.wait(), timeout=15)
        await _nats_round_trip(survivor, b"survived")
    finally:
        await survivor.close()


@restarts_broker
async def test_redis_broker_outage_same_url(redis_broker: Broker) -> None:
    with redis_broker.outage():
        assert not redis_broker.is_up()
        down = _redis(redis_broker.url)
        try:
            with pytest.raises((RedisConnectionError, OSError, TimeoutError)):
                await down.ping()
        finally:
            await down.aclose()

    assert redis_broker.is_up()
    fresh = _redis(redis_broker.url)
    try:
        assert await fresh.ping()
        await _redis_round_trip(fresh, "after")
    finally:
        await fresh.aclose()


@restarts_broker
def test_hard_restart_keeps_the_url(nats_broker: Broker, redis_broker: Broker) -> None:
    for broker in (nats_broker, redis_broker):
        url = broker.url
        broker.restart(graceful=False)  # SIGKILL, like a crashed broker
        assert broker.url == url
        assert broker.is_up()
