"""Two nodes' nearby meshes over real Redis, in one process (``signaling.nearby_mesh``).

Each node has its own room registry and nearby room; their guests meet as
ghosts through Redis. Checked: a guest near another node's guest becomes a
ghost there (and is piped to), bad announcements and bad voice frames are
dropped with a warning and change nothing, a guest who leaves is gone at
once, and one whose node falls silent expires after ``GHOST_TTL_S`` (a fake
clock moves past it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.bus import RedisBus
from groups.nearby.partition import partition_of, topic
from signaling.nearby import NEARBY_ROOM, NearbyRoom
from signaling.nearby_mesh import GHOST_TTL_S, NearbyMesh, voice_channel
from signaling.rooms import Participant, RoomRegistry
from tests.rtc_helpers import eventually

LAT, LON = 45.8326, 6.8652
M_PER_DEG_LAT = 111_195.0


@dataclass
class Inbox:
    subject: str
    display_name: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class MeshNode:
    name: str
    rooms: RoomRegistry
    nearby: NearbyRoom
    mesh: NearbyMesh
    bus: RedisBus


@pytest.fixture
async def nodes(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[MeshNode, MeshNode,
                                                                       FakeClock]]:
    import redis.asyncio as aioredis

    clock = FakeClock()
    made: list[MeshNode] = []
    clients = []
    for name in ("m1", "m2"):
        rooms = RoomRegistry()
        nearby = NearbyRoom(rooms)
        rooms.on_leave.append(nearby.leave)
        bus = RedisBus(redis_url, redis_prefix)
        await bus.start()
        client = aioredis.Redis.from_url(redis_url)
        clients.append(client)
        mesh = NearbyMesh(name, nearby, bus, client, redis_prefix, clock)
        await mesh.start()
        made.append(MeshNode(name, rooms, nearby, mesh, bus))
    try:
        yield made[0], made[1], clock
    finally:
        for node in made:
            await node.mesh.close()
            await node.rooms.close()
            await node.bus.close()
        for client in clients:
            await client.aclose()


async def guest(node: MeshNode, name: str, metres_north: float) -> Participant:
    p = await node.rooms.join(NEARBY_ROOM, Inbox(f"guest:{name}", name), radius_m=500.0)
    node.nearby.move(p, LAT + metres_north / M_PER_DEG_LAT, LON)
    return p


async def test_guests_of_two_nodes_meet_as_ghosts_and_part(
    nodes: tuple[MeshNode, MeshNode, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    m1, m2, clock = nodes
    a = await guest(m1, "A", 0.0)
    b = await guest(m2, "B", 150.0)
    await eventually(lambda: b.participant_id in m1.nearby.ghosts
                     and a.participant_id in m2.nearby.ghosts, 5.0, "each a ghost on the other")
    assert m1.nearby.piped_to(a.participant_id) == {"m2"}
    assert m2.nearby.piped_to(b.participant_id) == {"m1"}
    assert m1.nearby.ghosts[b.participant_id].display_name == "B"
    assert isinstance(a.peer, Inbox)
    await eventually(lambda: any(m["type"] == "nearby" and m["people"]
                                 for m in a.peer.messages), 5.0, "A told of B")

    # B renames itself on its node: A, who hears B, is told within a renewal.
    assert isinstance(b.peer, Inbox)
    b.peer.display_name = "Bea"
    await eventually(lambda: any(m["type"] == "participant_renamed" and m["display_name"] == "Bea"
                                 and m["participant_id"] == b.participant_id
                                 for m in a.peer.messages), 5.0, "A told B's new name")
    assert m1.nearby.people(a)[0]["display_name"] == "Bea"

    # Bad input from the bus: a warning each, no ghost, no crash.
    caplog.set_level(logging.WARNING, "signaling.nearby_mesh")
    cell = topic(partition_of(LAT, LON))
    bad = [{"op": "at", "pid": "p_bad", "node": "m9", "name": "X", "radius_m": 500.0,
            "lat": 91.0, "lon": LON},
           {"op": "at", "pid": "p_bad", "node": "m9", "name": "X", "radius_m": 1e9,
            "lat": LAT, "lon": LON},
           {"op": "at", "pid": "p_bad", "node": "m9"},
           {"op": "fly", "pid": "p_bad", "node": "m9"}]
    for message in bad:
        await m2.bus.publish(cell, message)
    await m2.mesh.redis.publish(voice_channel(m2.mesh.prefix, "m1"), b"not a frame")
    await eventually(lambda: len([r for r in caplog.records if "ignoring a bad" in r.message
                                  or "bad piped frame" in r.message]) == 2 * len(bad) + 1,
                     5.0, "a warning per bad message and node")
    assert "p_bad" not in m1.nearby.ghosts
    assert not [r for r in caplog.records if r.exc_info]

    # B leaves: gone from node m1 at once (an explicit "gone"), no waiting for expiry.
    await m2.rooms.leave(b)
    await eventually(lambda: b.participant_id not in m1.nearby.ghosts, 5.0, "B gone on m1")
    assert m1.nearby.piped_to(a.participant_id) == set()

    # C's node stops announcing (as if killed): C expires on m1 once GHOST_TTL_S has passed.
    c = await guest(m2, "C", 100.0)
    await eventually(lambda: c.participant_id in m1.nearby.ghosts, 5.0, "C a ghost on m1")
    await m2.mesh.close()
    clock.now += GHOST_TTL_S + 1.0
    await eventually(lambda: c.participant_id not in m1.nearby.ghosts, 5.0, "C expired on m1")
    assert m1.nearby.piped_to(a.participant_id) == set()


async def test_a_guest_crossing_a_partition_line_is_never_dropped_in_between(
    nodes: tuple[MeshNode, MeshNode, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B (node m2) walks from its partition into A's (node m1): m1 files B under the new
    partition before the old one lets go, so B's ghost (and its voice) never blinks."""
    from groups.geo import destination
    from tests.test_partition import across_a_line

    m1, m2, _clock = nodes
    b_side, a_side = across_a_line(LAT, LON, 100.0)
    a = await m1.rooms.join(NEARBY_ROOM, Inbox("guest:a", "A"), radius_m=500.0)
    m1.nearby.move(a, *a_side)
    b = await m2.rooms.join(NEARBY_ROOM, Inbox("guest:b", "B"), radius_m=500.0)
    m2.nearby.move(b, *b_side)
    pid = b.participant_id
    await eventually(lambda: pid in m1.nearby.ghosts, 5.0, "B a ghost on m1")
    drops: list[str] = []
    drop = m1.nearby.drop_ghost
    monkeypatch.setattr(m1.nearby, "drop_ghost", lambda p: (drops.append(p), drop(p)))
    old, new = topic(partition_of(*b_side)), topic(partition_of(*a_side))
    assert old != new and m1.mesh._heard[pid][0] == old
    crossed = destination(*a_side, 0.0, 10.0)
    assert partition_of(*crossed) == partition_of(*a_side)
    m2.nearby.move(b, *crossed)
    await eventually(lambda: m1.mesh._heard.get(pid, ("",))[0] == new, 5.0,
                     "B filed under A's partition on m1")
    m2.nearby.move(b, *destination(*a_side, 0.0, 15.0))  # one more fix: the gone is long past
    await eventually(lambda: m1.mesh._heard.get(pid, ("",))[4] != crossed[0], 5.0, "B moved")
    assert drops == [] and m1.nearby.piped_to(a.participant_id) == {"m2"}
    await m2.rooms.leave(b)
    await eventually(lambda: pid not in m1.nearby.ghosts, 5.0, "B gone once it leaves")
    assert drops == [pid]
