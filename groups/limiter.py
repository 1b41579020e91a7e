"""Rate limits behind one interface: in this process, or shared by every node in Redis.

``Limiter.take(key, now)`` spends one token of ``key``'s bucket and returns
0.0, or the seconds until a token is back. ``LocalLimiter`` is the in-process
``groups.ratelimit.TokenBucket``; ``RedisLimiter`` keeps the same bucket in a
Redis hash, refilled and spent by ONE Lua script (atomic: two nodes spending
at once cannot both take the last token). ``make_limiter`` picks one, once,
in the composition root: Redis when the deployment has it.

Time is the caller's ``now`` (nodes are expected to keep NTP time); a bucket
never moves backwards in time, so a node whose clock lags cannot mint tokens.
An idle key expires from Redis once its bucket would be full again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from groups.ratelimit import TokenBucket

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# KEYS[1] = bucket; ARGV = rate per second, burst, now (unix s).
# Returns {allowed (0|1), retry-after seconds as a string (Lua numbers become integers)}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
ts = math.max(ts, now)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


class Limiter(Protocol):
    rate_per_s: float
    burst: int

    async def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0.0 if allowed, else seconds until it would be."""
        ...


class LocalLimiter:
    """One process's buckets (``TokenBucket``): for a single node without Redis."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._bucket = TokenBucket(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst

    async def take(self, key: str, now: float) -> float:
        return self._bucket.take(key, now)


class RedisLimiter:
    """The same bucket in Redis under ``<prefix>ratelimit:<name>:<key>``, shared by all nodes."""

    def __init__(self, client: aioredis.Redis, name: str, rate_per_s: float, burst: int,
                 prefix: str = "disco:") -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._key_prefix = f"{prefix}ratelimit:{name}:"
        self._script: Any = client.register_script(TOKEN_BUCKET_LUA)

    def key(self, key: str) -> str:
        return self._key_prefix + key

    async def take(self, key: str, now: float) -> float:
        allowed, retry = await self._script(
            keys=[self.key(key)], args=[repr(self.rate_per_s), self.burst, repr(now)]
        )
        return 0.0 if int(allowed) else float(retry)


def make_limiter(client: aioredis.Redis | None, name: str, rate_per_s: float, burst: int,
                 prefix: str = "disco:") -> Limiter:
    """Redis when there is a client (every node shares the bucket), else this process."""
    if client is None:
        return LocalLimiter(rate_per_s, burst)
    return RedisLimiter(client, name, rate_per_s, burst, prefix)
