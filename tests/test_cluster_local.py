"""The embedded cluster (one process, no Redis)."""

from __future__ import annotations

from signaling.cluster.local import LocalCluster


async def test_once_is_once_per_window() -> None:
    now = [1000.0]
    cluster = LocalCluster("solo", lambda: now[0])
    assert await cluster.once("call_started:1", 60)
    assert not await cluster.once("call_started:1", 60)
    assert await cluster.once("call_started:2", 60)  # another key is its own
    now[0] += 59.9
    assert not await cluster.once("call_started:1", 60)
    now[0] += 0.2
    assert await cluster.once("call_started:1", 60)
