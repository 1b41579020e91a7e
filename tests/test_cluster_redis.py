"""The cluster over a real Redis: several nodes (RedisCluster instances, and one
real process killed with -9) sharing one prefix."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.errors import Elsewhere, Unavailable
from signaling.cluster.redis_cluster import RedisCluster
from signaling.rooms import Participant, RoomRegistry
from tests.services import stop_process

FAST = {"heartbeat_interval_s": 0.2, "heartbeat_expiry_s": 1.0}


@dataclass
class Member:
    """The connection side of a participant, as the rooms see it."""

    subject: str
    display_name: str = "m"
    got: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.got.append(message)


def node(name: str, redis_url: str, prefix: str, **kwargs: Any) -> RedisCluster:
    rooms = RoomRegistry()
    cluster = RedisCluster(name, aioredis.Redis.from_url(redis_url), prefix, rooms, time.time,
                           node_url=f"http://{name}.test", **{**FAST, **kwargs})
    rooms.on_leave.append(cluster.participant_left)
    return cluster


async def close(cluster: RedisCluster) -> None:
    """Drain the node, then close its Redis client (the node does not own it)."""
    await cluster.close()
    await cluster.redis.aclose()


async def join(cluster: RedisCluster, room: str, subject: str) -> Participant:
    return await cluster.admit(room, lambda: cluster.rooms.join(room, Member(subject)))


@pytest.fixture
async def three(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RedisCluster]]:
    nodes = [node(name, redis_url, redis_prefix) for name in ("a", "b", "c")]
    for n in nodes:
        await n.start()
    yield nodes
    for n in nodes:
        await close(n)


async def test_once_has_one_winner_across_nodes(three: list[RedisCluster]) -> None:
    tries = [n.once("call_started:9", 0.5) for n in three for _ in range(10)]
    results = await asyncio.gather(*tries)
    assert results.count(True) == 1
    assert not await three[0].once("call_started:9", 0.5)
    await asyncio.sleep(0.6)  # the window passed: the next call may push again
    assert await three[1].once("call_started:9", 0.5)


async def test_prefixes_keep_deployments_apart(three: list[RedisCluster], redis_url: str,
                                               redis_prefix: str) -> None:
    other = node("a", redis_url, redis_prefix + "other:")
    await other.start()
    try:
        assert await three[0].once("k", 5)
        assert await other.once("k", 5)
        assert [n.node_id for n in await other.nodes()] == ["a"]
        await join(other, "group:1", "1")
        await join(three[1], "group:1", "2")  # the other deployment's room is not ours
        assert three[1].held == {"group:1"} and other.held == {"group:1"}
    finally:
        await close(other)


async def test_nodes_register_with_their_load(three: list[RedisCluster]) -> None:
    a, b, _ = three
    await join(a, "group:1", "1")
    await join(a, "group:1", "2")
    await a.beat()
    seen = {n.node_id: n for n in await b.nodes()}
    assert sorted(seen) == ["a", "b", "c"]
    assert (seen["a"].load, seen["a"].capacity, seen["a"].url) == (2, 60, "http://a.test")
    assert seen["b"].load == 0


async def test_nodes_joining_one_room_at_once_agree_on_one_host(
    three: list[RedisCluster]
) -> None:
    rooms = [f"group:{n}" for n in range(20)]
    attempts = [join(n, room, f"{n.node_id}-{room}") for room in rooms for n in three]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    for i, room in enumerate(rooms):
        outcomes = results[3 * i: 3 * i + 3]
        hosts = [n.node_id for n, r in zip(three, outcomes, strict=True)
                 if isinstance(r, Participant)]
        assert len(hosts) == 1, (room, outcomes)  # never a room on two nodes
        for r in outcomes:
            if isinstance(r, Elsewhere):
                assert r.detail["node"] == hosts[0]
                assert r.detail["url"] == f"http://{hosts[0]}.test"
            else:
                assert isinstance(r, Participant)
    assert sum(len(n.held) for n in three) == len(rooms)


async def test_only_the_holder_releases_and_an_empty_room_is_free(
    three: list[RedisCluster]
) -> None:
    a, b, _ = three
    first = await join(a, "group:5", "1")
    assert not await b.release("group:5")  # b's "room emptied" cannot delete a's room
    with pytest.raises(Elsewhere):
        await join(b, "group:5", "2")
    await asyncio.sleep(0.5)  # heartbeats renew the claim while a hosts the room
    with pytest.raises(Elsewhere):
        await join(b, "group:5", "2")
    await a.rooms.leave(first)  # empty on a: a releases it
    deadline = time.monotonic() + 2
    while True:
        try:
            await join(b, "group:5", "2")
            break
        except Elsewhere:
            assert time.monotonic() < deadline, "the emptied room was never released"
            await asyncio.sleep(0.05)
    assert "group:5" in b.held and "group:5" not in a.held


async def test_nearby_is_not_placed(three: list[RedisCluster]) -> None:
    for n in three:
        await join(n, "nearby", f"guest-{n.node_id}")  # served where it connects (nearby_mesh)
    assert not any(n.held for n in three)


async def test_a_node_killed_with_9_frees_its_rooms(three: list[RedisCluster], redis_url: str,
                                                   redis_prefix: str) -> None:
    script = f"""
import asyncio, time
import redis.asyncio
from signaling.cluster.redis_cluster import RedisCluster
from signaling.rooms import RoomRegistry

class Member:
    subject, display_name = "7", "m"
    def send(self, message): pass

async def main():
    rooms = RoomRegistry()
    client = redis.asyncio.Redis.from_url({redis_url!r})
    cluster = RedisCluster("doomed", client, {redis_prefix!r}, rooms, time.time,
                           heartbeat_interval_s=0.2, heartbeat_expiry_s=1.0)
    await cluster.start()
    await cluster.admit("group:77", lambda: rooms.join("group:77", Member()))
    print("hosting", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == "hosting"
        with pytest.raises(Elsewhere) as where:
            await join(three[0], "group:77", "1")
        assert where.value.detail["node"] == "doomed"
        proc.kill()  # SIGKILL: no goodbye, no release
        await proc.wait()
        killed = time.monotonic()
        while True:
            try:
                await join(three[0], "group:77", "1")
                break
            except Elsewhere:
                await asyncio.sleep(0.05)
            assert time.monotonic() - killed < 3.0, "the dead node's room stayed claimed"
        took = time.monotonic() - killed
        assert took <= FAST["heartbeat_expiry_s"] + 0.5
        assert "doomed" not in [n.node_id for n in await three[1].nodes()]
    finally:
        await stop_process(proc)


async def test_unreachable_redis_is_a_clear_error() -> None:
    cluster = node("a", "redis://127.0.0.1:1/0", "x:")
    with pytest.raises(Unavailable, match="unreachable"):
        await cluster.start()
    with pytest.raises(Unavailable, match="unreachable"):
        await join(cluster, "group:1", "1")
    await cluster.redis.aclose()
