"""Publish/subscribe between the parts of one node, or between nodes.

``LocalBus`` delivers in-process; ``RedisBus`` sends through Redis pub/sub so
that every node sees every message. Both fan out locally through the same
``_Fanout``: one Redis subscription per topic per node, however many local
subscribers. Messages are JSON-able dicts. A slow subscriber loses its oldest
messages (bounded queue), never stalls the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

from common.errors import Unavailable
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SUBSCRIPTION_QUEUE_MAX = 1000
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0

Message = dict[str, Any]


class Subscription:
    """A set of topics and a queue of ``(topic, message)``; iterate to receive."""

    def __init__(self, fanout: _Fanout) -> None:
        self._fanout = fanout
        self._queue: asyncio.Queue[tuple[str, Message] | None] = asyncio.Queue(
            SUBSCRIPTION_QUEUE_MAX
        )
        self.topics: set[str] = set()
        self.dropped = 0

    async def add(self, *topics: str) -> None:
        for topic in topics:
            if topic not in self.topics:
                self.topics.add(topic)
                await self._fanout.attach(topic, self)

    async def remove(self, *topics: str) -> None:
        for topic in topics:
            if topic in self.topics:
                self.topics.discard(topic)
                await self._fanout.detach(topic, self)

    async def close(self) -> None:
        await self.remove(*list(self.topics))
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def _put(self, topic: str, message: Message) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((topic, message))

    async def get(self) -> tuple[str, Message] | None:
        """The next message, or None once closed."""
        return await self._queue.get()

    async def __aiter__(self) -> AsyncIterator[tuple[str, Message]]:
        while (item := await self._queue.get()) is not None:
            yield item


class _Fanout:
    """Topic -> local subscribers; hooks tell the transport when a topic starts/stops."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    async def attach(self, topic: str, sub: Subscription) -> None:
        first = not self._subs[topic]
        self._subs[topic].add(sub)
        if first:
            await self.on_first(topic)

    async def detach(self, topic: str, sub: Subscription) -> None:
        subs = self._subs.get(topic)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[topic]
            await self.on_last(topic)

    def deliver(self, topic: str, message: Message) -> int:
        subs = list(self._subs.get(topic, ()))
        for sub in subs:
            sub._put(topic, message)
        return len(subs)

    async def on_first(self, topic: str) -> None:
        """Called when a topic gets its first local subscriber."""

    async def on_last(self, topic: str) -> None:
        """Called when a topic loses its last local subscriber."""


class Bus(Protocol):
    async def publish(self, topic: str, message: Message) -> int:
        """Send; returns how many subscribers (local ones, or nodes over Redis) got it."""

    def subscription(self) -> Subscription: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalBus(_Fanout):
    """In-process bus: one node, no dependencies."""

    async def publish(self, topic: str, message: Message) -> int:
        return self.deliver(topic, message)

    def subscription(self) -> Subscription:
        return Subscription(self)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisBus(_Fanout):
    """Redis pub/sub: every node receives what any node publishes."""

    def __init__(self, url: str, prefix: str = "disco:") -> None:
        super().__init__()
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._prefix = prefix
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await self._redis.ping()
        # redis-py's listen() returns at once while nothing is subscribed, so a
        # placeholder channel keeps the reader's connection in subscribe mode.
        await self._pubsub.subscribe(self._prefix + "_")
        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")

    async def _read(self) -> None:
        """Deliver what arrives; when Redis goes away, resubscribe once it is back."""
        from redis.exceptions import RedisError

        backoff_s = RECONNECT_MIN_S
        while True:
            try:
                async for raw in self._pubsub.listen():
                    backoff_s = RECONNECT_MIN_S
                    if raw.get("type") != "message":
                        continue
                    topic = raw["channel"].decode().removeprefix(self._prefix)
                    try:
                        message = json.loads(raw["data"])
                    except (ValueError, TypeError):
                        log.warning("dropping a non-JSON bus message on %s", topic)
                        continue
                    self.deliver(topic, message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis bus lost its connection (%s); retrying in %.1f s",
                            exc, backoff_s)
            await asyncio.sleep(backoff_s)
            backoff_s = min(RECONNECT_MAX_S, backoff_s * 2)
            await self._resubscribe()

    async def _resubscribe(self) -> None:
        """A new pub/sub connection with every topic this node listens to."""
        from redis.exceptions import RedisError

        old, self._pubsub = self._pubsub, self._redis.pubsub(ignore_subscribe_messages=True)
        with contextlib.suppress(RedisError, OSError):
            await old.aclose()
        try:
            await self._pubsub.subscribe(self._prefix + "_",
                                         *(self._prefix + topic for topic in self._subs))
            log.info("redis bus reconnected (%d topics)", len(self._subs))
        except (RedisError, OSError) as exc:
            log.warning("redis bus still unreachable: %s", exc)

    async def on_first(self, topic: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._pubsub.subscribe(self._prefix + topic)
        except (RedisError, OSError) as exc:  # subscribed again when the reader reconnects
            log.warning("cannot subscribe to %s now: %s", topic, exc)

    async def on_last(self, topic: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._pubsub.unsubscribe(self._prefix + topic)
        except (RedisError, OSError) as exc:
            log.warning("cannot unsubscribe from %s now: %s", topic, exc)

    async def publish(self, topic: str, message: Message) -> int:
        """Returns how many nodes were subscribed to ``topic`` (Redis counts connections).

        Raises ``Unavailable`` while Redis cannot be reached.
        """
        from redis.exceptions import RedisError

        try:
            return int(await self._redis.publish(self._prefix + topic, json.dumps(message)))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"the message bus (Redis) is unreachable: {exc}") from exc

    def subscription(self) -> Subscription:
        return Subscription(self)

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        await self._pubsub.aclose()
        await self._redis.aclose()


def make_bus(redis_url: str | None, prefix: str = "disco:") -> LocalBus | RedisBus:
    return RedisBus(redis_url, prefix) if redis_url else LocalBus()
