"""The cluster over a real Redis: several nodes (RedisCluster instances) sharing one prefix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from signaling.cluster.redis_cluster import RedisCluster


@pytest.fixture
async def three(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RedisCluster]]:
    nodes = [RedisCluster(name, redis_url, redis_prefix) for name in ("a", "b", "c")]
    for node in nodes:
        await node.start()
    yield nodes
    for node in nodes:
        await node.close()


async def test_once_has_one_winner_across_nodes(three: list[RedisCluster]) -> None:
    tries = [node.once("call_started:9", 0.5) for node in three for _ in range(10)]
    results = await asyncio.gather(*tries)
    assert results.count(True) == 1
    assert not await three[0].once("call_started:9", 0.5)
    await asyncio.sleep(0.6)  # the window passed: the next call may push again
    assert await three[1].once("call_started:9", 0.5)


async def test_prefixes_keep_deployments_apart(three: list[RedisCluster], redis_url: str,
                                               redis_prefix: str) -> None:
    other = RedisCluster("a", redis_url, redis_prefix + "other:")
    await other.start()
    try:
        assert await three[0].once("k", 5)
        assert await other.once("k", 5)
    finally:
        await other.close()
