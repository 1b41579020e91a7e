"""The embedded cluster: one process, no Redis, every room placed here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from signaling.cluster.placement import NodeInfo
from signaling.rooms import Participant

T = TypeVar("T")


class LocalCluster:
    """A cluster of one node; ``once`` is remembered in memory."""

    def __init__(self, node_id: str, clock: Callable[[], float], url: str = "") -> None:
        self.node_id = node_id
        self.url = url
        self._clock = clock
        self._once: dict[str, float] = {}  # key -> until (clock time)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        self._once = {k: until for k, until in self._once.items() if until > now}
        if key in self._once:
            return False
        self._once[key] = now + ttl_s
        return True

    async def place(self, room_id: str) -> NodeInfo:
        """Always here: there is no other node (capacity is not enforced alone)."""
        return NodeInfo(self.node_id, 0, 1, self._clock(), url=self.url)

    async def admit(self, room_id: str, join: Callable[[], Awaitable[T]]) -> T:
        return await join()

    async def live_node_ids(self) -> set[str]:
        return {self.node_id}

    def participant_left(self, participant: Participant) -> None:
        return None
