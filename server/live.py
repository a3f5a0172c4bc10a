"""Live updates: the hub that carries committed changes to open stream connections.

Topics are `order:<user_id>` (a customer's own order status changes) and `product:<id>` (stock
and price changes). A service publishes after its transaction commits; with `REDIS_URL` the
message goes through one Redis pub/sub channel, which every gateway replica subscribes to once
and fans out to its own connections, so a change made through any replica reaches every
replica's clients. Without Redis the hub fans out in-process.

Each connection has a bounded queue (`QUEUE_SIZE`): a consumer too slow to keep up is dropped
(its queue overflowed) rather than allowed to grow the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson

from server import metrics

log = logging.getLogger(__name__)

CHANNEL = "storefront:live"
QUEUE_SIZE = 256


class Subscriber:
    """One stream connection's topics and bounded queue of serialised messages."""

    __slots__ = ("overflowed", "queue", "topics")

    def __init__(self, topics: Iterable[str], size: int = QUEUE_SIZE) -> None:
        self.topics = frozenset(topics)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, message: bytes) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True  # the connection closes it: a slow consumer is dropped
            metrics.STREAM_DROPPED.inc()


class LiveHub:
    def __init__(self, redis: Any | None = None) -> None:
        self.redis = redis
        self._by_topic: dict[str, set[Subscriber]] = {}
        self._listener: asyncio.Task[None] | None = None

    # ---- connections --------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str], size: int = QUEUE_SIZE) -> Subscriber:
        subscriber = Subscriber(topics, size)
        for topic in subscriber.topics:
            self._by_topic.setdefault(topic, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        for topic in subscriber.topics:
            listeners = self._by_topic.get(topic)
            if listeners is not None:
                listeners.discard(subscriber)
                if not listeners:
                    del self._by_topic[topic]

    # ---- publishing ---------------------------------------------------------------------

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Send `message` to everyone on `topic`, on every replica. Never raises: a stream is a
        best-effort view; the REST and gRPC reads stay the truth."""
        envelope = {"topic": topic, "sent_at": time.time(), **message}
        payload = orjson.dumps(envelope)
        if self.redis is None:
            self._fan_out(topic, payload)
            return
        try:
            await self.redis.publish(CHANNEL, payload)
        except Exception as exc:  # Redis down: this replica's own clients still hear it
            log.warning("live update not published through Redis (%s); local only", exc)
            self._fan_out(topic, payload)

    def _fan_out(self, topic: str, payload: bytes) -> None:
        for subscriber in tuple(self._by_topic.get(topic, ())):
            subscriber.offer(payload)

    # ---- the Redis side ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="live-hub")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self) -> None:
        """Receive every replica's messages and fan them out here; reconnects after errors."""
        assert self.redis is not None
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    payload = message["data"]
                    try:
                        topic = orjson.loads(payload)["topic"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    self._fan_out(topic, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live updates: Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
