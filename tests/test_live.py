"""The live-update hub: topics, bounded queues that drop a slow consumer at once, the caps,
and fan-out across hubs through a real Redis (as across gateway replicas)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis.asyncio import Redis

from server import metrics
from server.live import CHANNEL, END, LiveHub, Refused


async def test_a_message_reaches_the_subscribers_of_its_topic_only() -> None:
    hub = LiveHub()
    shoes = hub.subscribe(["product:1"])
    both = hub.subscribe(["product:1", "order:7"])
    orders = hub.subscribe(["order:7"])
    await hub.publish("product:1", {"type": "stock.changed", "data": {"stock": 3}})
    assert orjson.loads(shoes.queue.get_nowait())["data"] == {"stock": 3}
    assert orjson.loads(both.queue.get_nowait())["topic"] == "product:1"
    assert orders.queue.empty()


async def test_an_overflowing_queue_ends_the_stream_at_once() -> None:
    hub = LiveHub()
    slow = hub.subscribe(["product:1"], size=3)
    before = metrics.STREAM_DROPPED._value.get()
    for n in range(4):
        await hub.publish("product:1", {"type": "stock.changed", "data": {"n": n}})
    assert slow.closed == "slow"
    assert metrics.STREAM_DROPPED._value.get() == before + 1
    # The backlog is dropped: the connection wakes to END, not to three stale messages.
    assert slow.queue.get_nowait() is END and slow.queue.empty()
    await hub.publish("product:1", {"type": "stock.changed", "data": {}})
    assert slow.queue.empty()


def test_caps_per_process_and_per_user_and_their_release() -> None:
    hub = LiveHub(max_connections=3, max_per_user=2)
    first = hub.subscribe(["order:1"], user_id=1)
    hub.subscribe(["order:1"], user_id=1)
    with pytest.raises(Refused) as per_user:
        hub.subscribe(["order:1"], user_id=1)
    assert per_user.value.per_user
    hub.subscribe(["product:9"])
    with pytest.raises(Refused) as full:
        hub.subscribe(["product:9"], user_id=2)
    assert not full.value.per_user
    hub.unsubscribe(first)
    hub.unsubscribe(first)  # twice is harmless
    assert hub.open_streams == 2
    hub.subscribe(["order:1"], user_id=1)
    assert hub.open_streams == 3


def test_close_all_ends_every_stream_with_its_reason() -> None:
    hub = LiveHub()
    streams = [hub.subscribe([f"product:{n}"]) for n in range(3)]
    hub.close_all("shutdown")
    assert all(s.closed == "shutdown" and s.queue.get_nowait() is END for s in streams)


async def test_two_hubs_on_one_redis_hear_each_other(redis_url: str) -> None:
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    first, second = LiveHub(one), LiveHub(two)
    await first.start()
    await second.start()
    try:
        listener = second.subscribe(["product:5"])
        # start() returns once subscribed: a started replica hears every later change.
        assert (await one.pubsub_numsub(CHANNEL))[0][1] == 2
        await first.publish("product:5", {"type": "stock.changed", "data": {"stock": 1}})
        message = await asyncio.wait_for(listener.queue.get(), 5)
        assert orjson.loads(message)["data"] == {"stock": 1}
    finally:
        await first.stop()
        await second.stop()
        await one.aclose()
        await two.aclose()


async def test_without_redis_a_replica_still_tells_its_own_clients() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    hub = LiveHub(dead)
    listener = hub.subscribe(["order:3"])
    await hub.publish("order:3", {"type": "order.paid", "data": {"id": 1}})
    assert orjson.loads(listener.queue.get_nowait())["type"] == "order.paid"
    await dead.aclose()
