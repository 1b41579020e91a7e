"""The embedded cluster: one process, no Redis, everything happens here."""

from __future__ import annotations

from collections.abc import Callable


class LocalCluster:
    """A cluster of one node; ``once`` is remembered in memory."""

    def __init__(self, node_id: str, clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self._clock = clock
        self._once: dict[str, float] = {}  # key -> until (clock time)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        self._once = {k: until for k, until in self._once.items() if until > now}
        if key in self._once:
            return False
        self._once[key] = now + ttl_s
        return True
