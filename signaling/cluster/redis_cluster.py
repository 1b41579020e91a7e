"""The cluster over one shared Redis: every key under the deployment's prefix."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RedisCluster:
    """Nodes of one deployment meeting in Redis (``DISCO_REDIS_URL``, ``DISCO_REDIS_PREFIX``)."""

    def __init__(self, node_id: str, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.node_id = node_id
        self.prefix = prefix
        self.redis = aioredis.Redis.from_url(url)

    async def start(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()

    async def once(self, key: str, ttl_s: float) -> bool:
        """One atomic SET NX PX: exactly one caller wins, whichever node it runs on."""
        from redis.exceptions import RedisError

        try:
            won = await self.redis.set(f"{self.prefix}once:{key}", self.node_id, nx=True,
                                       px=max(1, round(ttl_s * 1000)))
        except RedisError as exc:
            log.warning("Redis unavailable for once(%s): %s; treating it as done", key, exc)
            return False
        return bool(won)
