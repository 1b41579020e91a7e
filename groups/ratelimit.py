"""A per-key token bucket, pure: the caller passes ``now``.

Why a token bucket: phones send location in bursts (a background wake-up
flushes several buffered fixes) and people type chat in bursts; a bucket
allows a short burst and then a steady rate, which a fixed window does not.
Idle keys are forgotten so memory follows the active population.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from common.errors import RateLimited

log = logging.getLogger(__name__)

PRUNE_EVERY_CALLS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucket:
    """``rate_per_s`` tokens per second up to ``burst``; one call spends one token."""

    def __init__(self, rate_per_s: float, burst: int, what: str = "requests") -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.what = what
        self._buckets: dict[Hashable, _Bucket] = {}
        self._calls = 0

    def allow(self, key: Hashable, now: float) -> bool:
        """Spend a token for ``key`` if one is left; False means over the rate."""
        return self.take(key, now) == 0.0

    def take(self, key: Hashable, now: float) -> float:
        """Spend a token for ``key``: 0.0 if one was left, else seconds until one is."""
        self._calls += 1
        if self._calls % PRUNE_EVERY_CALLS == 0:
            self.prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = _Bucket(self.burst - 1.0, now)
            return 0.0
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated = max(bucket.updated, now)
        if bucket.tokens < 1.0:
            return (1.0 - bucket.tokens) / self.rate_per_s
        bucket.tokens -= 1.0
        return 0.0

    def check(self, key: Hashable, now: float) -> None:
        """Like ``allow`` but raises ``RateLimited`` with a retry hint."""
        retry_s = self.take(key, now)
        if retry_s > 0.0:
            raise RateLimited(
                f"too many {self.what}: at most {self.rate_per_s:g}/s (burst {self.burst})",
                detail={"retry_after_s": round(retry_s, 3)},
            )

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def prune(self, now: float) -> None:
        """Drop buckets that have refilled completely: they hold no information."""
        full_after_s = self.burst / self.rate_per_s
        stale = [k for k, b in self._buckets.items() if now - b.updated >= full_after_s]
        for key in stale:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
