"""Rate limiters: the in-process bucket, and the Redis bucket shared by two "nodes"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from groups.limiter import LocalLimiter, RedisLimiter, make_limiter
from groups.ratelimit import TokenBucket

NOW = 1_800_000_000.0


async def test_local_limiter_burst_then_rate() -> None:
    limiter = LocalLimiter(rate_per_s=0.5, burst=3)
    assert [await limiter.take("k", NOW) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.take("k", NOW) == pytest.approx(2.0)
    assert await limiter.take("other", NOW) == 0.0  # keys are independent
    assert await limiter.take("k", NOW + 1.0) == pytest.approx(1.0)
    assert await limiter.take("k", NOW + 2.0) == 0.0


def test_token_bucket_take_matches_allow() -> None:
    bucket = TokenBucket(1.0, 1)
    assert bucket.take("a", NOW) == 0.0
    assert bucket.take("a", NOW + 0.25) == pytest.approx(0.75)
    assert not bucket.allow("a", NOW + 0.5)
    assert bucket.allow("a", NOW + 1.0)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_redis_bucket_is_shared_by_two_nodes(redis_client: aioredis.Redis,
                                                   redis_url: str, redis_prefix: str) -> None:
    other_node = aioredis.Redis.from_url(redis_url)
    try:
        a, b = (RedisLimiter(client, "login:account", rate_per_s=0.5, burst=4,
                             prefix=redis_prefix) for client in (redis_client, other_node))
        spent = [await (a if n % 2 else b).take("alice", NOW) for n in range(4)]
        assert spent == [0.0] * 4
        assert await a.take("alice", NOW) == pytest.approx(2.0)
        assert await b.take("alice", NOW + 0.5) == pytest.approx(1.5)
        assert await b.take("alice", NOW + 2.0) == 0.0  # refilled one token
        assert await a.take("alice", NOW + 2.0) > 0
        # the key carries the deployment's prefix and expires once it would be full
        ttl_ms = await redis_client.pttl(f"{redis_prefix}ratelimit:login:account:alice")
        assert 0 < ttl_ms <= (4 / 0.5) * 1000 + 1000
        # another prefix (another deployment on the same Redis) has its own buckets
        c = RedisLimiter(redis_client, "login:account", rate_per_s=0.5, burst=4,
                         prefix=redis_prefix + "other:")
        assert await c.take("alice", NOW) == 0.0
    finally:
        await other_node.aclose()


async def test_redis_bucket_is_atomic_under_concurrency(redis_client: aioredis.Redis,
                                                        redis_url: str, redis_prefix: str
                                                        ) -> None:
    nodes = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        limiters = [RedisLimiter(n, "login:address", rate_per_s=0.001, burst=10,
                                 prefix=redis_prefix) for n in nodes]
        results = await asyncio.gather(
            *(limiters[i % 2].take("10.0.0.1", NOW) for i in range(40)))
        assert sum(1 for r in results if r == 0.0) == 10
    finally:
        for node in nodes:
            await node.aclose()


async def test_a_clock_behind_cannot_mint_tokens(redis_client: aioredis.Redis,
                                                 redis_prefix: str) -> None:
    limiter = RedisLimiter(redis_client, "x", rate_per_s=1.0, burst=1, prefix=redis_prefix)
    assert await limiter.take("k", NOW) == 0.0
    assert await limiter.take("k", NOW - 100) > 0  # a lagging node
    assert await limiter.take("k", NOW + 0.5) == pytest.approx(0.5)


async def test_factory_picks_redis_only_with_a_client(redis_client: aioredis.Redis) -> None:
    assert isinstance(make_limiter(None, "n", 1.0, 1), LocalLimiter)
    assert isinstance(make_limiter(redis_client, "n", 1.0, 1), RedisLimiter)
    with pytest.raises(ValueError):
        RedisLimiter(redis_client, "n", 0.0, 1)
