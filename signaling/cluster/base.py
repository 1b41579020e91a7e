"""The interface every cluster implementation offers (``local`` and ``redis_cluster``)."""

from __future__ import annotations

from typing import Protocol


class Cluster(Protocol):
    node_id: str

    async def start(self) -> None:
        """Connect and start the node's own cluster jobs."""

    async def close(self) -> None:
        """Stop the jobs and let go of what this node holds."""

    async def once(self, key: str, ttl_s: float) -> bool:
        """True for the first caller of ``key`` on any node within ``ttl_s``, else False."""
