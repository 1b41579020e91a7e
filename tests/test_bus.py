"""The bus: in-process, and Redis pub/sub between two 'nodes'."""

from __future__ import annotations

import asyncio

from common.bus import LocalBus, RedisBus


async def test_local_bus_delivers_to_subscribers_of_the_topic() -> None:
    bus = LocalBus()
    a, b = bus.subscription(), bus.subscription()
    await a.add("group:1")
    await b.add("group:2")
    await bus.publish("group:1", {"n": 1})
    await bus.publish("group:2", {"n": 2})
    assert await asyncio.wait_for(a.get(), 1) == ("group:1", {"n": 1})
    assert await asyncio.wait_for(b.get(), 1) == ("group:2", {"n": 2})
    await a.remove("group:1")
    await bus.publish("group:1", {"n": 3})
    await a.close()
    assert await asyncio.wait_for(a.get(), 1) is None  # closed, nothing else arrived


async def test_slow_subscriber_loses_oldest_not_the_publisher() -> None:
    bus = LocalBus()
    sub = bus.subscription()
    await sub.add("t")
    for n in range(1100):
        await bus.publish("t", {"n": n})
    assert sub.dropped == 100
    assert (await sub.get()) == ("t", {"n": 100})


async def test_redis_bus_crosses_nodes(redis_url: str, redis_prefix: str) -> None:
    node_a, node_b = RedisBus(redis_url, redis_prefix), RedisBus(redis_url, redis_prefix)
    await node_a.start()
    await node_b.start()
    try:
        sub = node_b.subscription()
        await sub.add("group:9")
        await asyncio.sleep(0.1)  # let Redis register the subscription
        await node_a.publish("group:9", {"type": "member_location", "lat": 1.5})
        await node_a.publish("group:8", {"type": "not for us"})
        assert await asyncio.wait_for(sub.get(), 3) == (
            "group:9", {"type": "member_location", "lat": 1.5}
        )
        await sub.remove("group:9")
        await asyncio.sleep(0.1)
        await node_a.publish("group:9", {"type": "after unsubscribe"})
        await asyncio.sleep(0.2)
        assert sub._queue.empty()
    finally:
        await node_a.close()
        await node_b.close()


async def test_deployments_with_other_prefixes_do_not_hear_each_other(
    redis_url: str, redis_prefix: str
) -> None:
    ours, theirs = RedisBus(redis_url, redis_prefix), RedisBus(redis_url, redis_prefix + "other:")
    await ours.start()
    await theirs.start()
    try:
        sub = ours.subscription()
        await sub.add("group:9")
        await asyncio.sleep(0.1)
        await theirs.publish("group:9", {"type": "theirs"})
        await ours.publish("group:9", {"type": "ours"})
        assert await asyncio.wait_for(sub.get(), 3) == ("group:9", {"type": "ours"})
        await asyncio.sleep(0.2)
        assert sub._queue.empty()
    finally:
        await ours.close()
        await theirs.close()
