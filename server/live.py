"""Live updates: the hub that carries committed changes to open stream connections.

Topics are `order:<user_id>` (a customer's own order status changes) and `product:<id>` (stock
and price changes). A service publishes after its transaction commits; with `REDIS_URL` the
message goes through one Redis pub/sub channel, which every gateway replica subscribes to once
and fans out to its own connections, so a change made through any replica reaches every
replica's clients. Without Redis the hub fans out in-process.

Each connection has a bounded queue (`QUEUE_SIZE`): a consumer too slow to keep up is dropped
(its queue overflowed) rather than allowed to grow the gateway's memory. The hub also holds the
caps: open streams per process (`STREAM_MAX_CONNECTIONS`) and per signed-in user
(`STREAM_MAX_PER_USER`).
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
    """One stream connection's topics and bounded queue of serialised messages.

    An empty message (END) is the end of the stream; `closed` then says why: "slow" (its queue
    overflowed), "expired" (its token), "shutdown", "gone" (the client left)."""

    __slots__ = ("closed", "queue", "topics", "user_id")

    def __init__(self, topics: Iterable[str], user_id: int | None, size: int = QUEUE_SIZE) -> None:
        self.topics = frozenset(topics)
        self.user_id = user_id
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=size)
        self.closed: str | None = None

    def offer(self, message: bytes) -> None:
        if self.closed is not None:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            metrics.STREAM_DROPPED.inc()
            self.close("slow")  # too many updates left unread

    def close(self, reason: str) -> None:
        """End the stream now, not after the backlog (a slow consumer could not read it)."""
        if self.closed is not None:
            return
        self.closed = reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(END)


END = b""


class Refused(Exception):
    """A cap on open streams is reached; `per_user` tells which."""

    def __init__(self, detail: str, *, per_user: bool) -> None:
        super().__init__(detail)
        self.per_user = per_user


class LiveHub:
    def __init__(
        self, redis: Any | None = None, *, max_connections: int = 10_000, max_per_user: int = 5
    ) -> None:
        self.redis = redis
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self._by_topic: dict[str, set[Subscriber]] = {}
        self._open: set[Subscriber] = set()
        self._per_user: dict[int, int] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # ---- connections --------------------------------------------------------------------

    def subscribe(
        self, topics: Iterable[str], user_id: int | None = None, size: int = QUEUE_SIZE
    ) -> Subscriber:
        """A new stream on `topics`; `Refused` when a cap is reached."""
        if len(self._open) >= self.max_connections:
            metrics.STREAM_REFUSED.inc()
            raise Refused("this gateway holds as many streams as it may", per_user=False)
        if user_id is not None and self._per_user.get(user_id, 0) >= self.max_per_user:
            metrics.STREAM_REFUSED.inc()
            raise Refused(f"at most {self.max_per_user} open streams per user", per_user=True)
        subscriber = Subscriber(topics, user_id, size)
        self._open.add(subscriber)
        if user_id is not None:
            self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
        for topic in subscriber.topics:
            self._by_topic.setdefault(topic, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber not in self._open:
            return
        self._open.discard(subscriber)
        user_id = subscriber.user_id
        if user_id is not None:
            left = self._per_user.get(user_id, 1) - 1
            if left > 0:
                self._per_user[user_id] = left
            else:
                self._per_user.pop(user_id, None)
        for topic in subscriber.topics:
            listeners = self._by_topic.get(topic)
            if listeners is not None:
                listeners.discard(subscriber)
                if not listeners:
                    del self._by_topic[topic]

    @property
    def open_streams(self) -> int:
        return len(self._open)

    def close_all(self, reason: str) -> None:
        """End every open stream (the gateway is shutting down)."""
        for subscriber in tuple(self._open):
            subscriber.close(reason)

    # ---- publishing ---------------------------------------------------------------------

    async def publish(
        self, topic: str, message: dict[str, Any], *, sent_at: float | None = None
    ) -> None:
        """Send `message` to everyone on `topic`, on every replica. Never raises: a stream is a
        best-effort view; the REST and gRPC reads stay the truth. `sent_at` (default now) is
        when the change committed."""
        envelope = {"topic": topic, "sent_at": time.time() if sent_at is None else sent_at}
        envelope.update(message)
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
        """Subscribe to the channel; a gateway that has started hears every later change (unless
        Redis is down: then the listener keeps retrying in the background)."""
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="live-hub")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._subscribed.wait()

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
                self._subscribed.set()
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
