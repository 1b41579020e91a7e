"""The nearby room patches the mixer's plan and its messages pair by pair; both must
equal a full rebuild.

A fix changes only the pairs that include the mover (pairs are mutual), so
the room patches those entries of the plan and of what each participant has
been told. After every step of a random walk with joins, radius changes and
leaves, the live plan in the media room must equal the plan built from
scratch from the index, no row may name someone who left, and the last
``nearby`` message each participant got must list exactly the people and
rounded distances a fresh computation gives.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from groups.nearby.proximity import RADIUS_MAX_M, RADIUS_MIN_M
from signaling.nearby import NEARBY_ROOM, NearbyRoom
from signaling.rooms import Participant, RoomRegistry

M_PER_DEG_LAT = 111_195.0
BASE_LAT, BASE_LON = 48.8566, 2.3522
AREA_M = 3_000.0  # people spread over 3 x 3 km: many in range, many not
PEOPLE = 60
STEPS = 400


@dataclass
class Inbox:
    """A participant's connection side: what the room sent them."""

    subject: str
    display_name: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def position(rng: random.Random) -> tuple[float, float]:
    north, east = rng.uniform(0, AREA_M), rng.uniform(0, AREA_M)
    lat = BASE_LAT + north / M_PER_DEG_LAT
    return lat, BASE_LON + east / (M_PER_DEG_LAT * math.cos(math.radians(BASE_LAT)))


def nonempty(plan: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]]:
    assert plan is not None, "a nearby room's plan is never the group room's None"
    return {listener: row for listener, row in plan.items() if row}


@pytest.fixture
async def registry() -> AsyncIterator[RoomRegistry]:
    rooms = RoomRegistry()
    yield rooms
    await rooms.close()


async def test_patched_plan_equals_a_full_rebuild(registry: RoomRegistry) -> None:
    nearby = NearbyRoom(registry)
    registry.on_leave.append(nearby.leave)
    registry.media_started[NEARBY_ROOM] = nearby.media_started
    rng = random.Random(7)
    people: dict[str, Participant] = {}

    async def join(n: int) -> Participant:
        p = await registry.join(NEARBY_ROOM, Inbox(f"guest:{n}", f"G{n}"),
                                radius_m=rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
        people[p.participant_id] = p
        return p

    for n in range(PEOPLE // 2):  # half have a fix before the media room starts
        nearby.move(await join(n), *position(rng))
    media = await registry.media(NEARBY_ROOM)
    joined = PEOPLE // 2
    heard_anyone = 0
    for step in range(STEPS):
        roll = rng.random()
        if roll < 0.1 and joined < PEOPLE * 2:
            joined += 1
            p = await join(joined)
            if rng.random() < 0.8:  # some never send a fix: they hear nobody
                nearby.move(p, *position(rng))
        elif roll < 0.2 and people:
            p = people.pop(rng.choice(sorted(people)))
            await registry.leave(p)
        elif roll < 0.3 and people:
            nearby.set_radius(people[rng.choice(sorted(people))],
                              rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
        elif people:
            p = people[rng.choice(sorted(people))]
            if p.participant_id in nearby.index and rng.random() < 0.7:
                lat, lon = nearby.index.latlon[p.participant_id]  # a short walk
                nearby.move(p, lat + rng.uniform(-300, 300) / M_PER_DEG_LAT,
                            lon + rng.uniform(-300, 300) / M_PER_DEG_LAT)
            else:
                nearby.move(p, *position(rng))  # a jump (or a first fix)

        live = nonempty(media.audibility())
        rebuilt = nonempty(nearby.index.audibility(people))
        assert live == rebuilt, f"step {step}: the patched plan drifted from the index"
        assert all(speaker in people for row in live.values() for speaker in row), (
            f"step {step}: a row names someone who left"
        )
        for p in people.values():
            if p.participant_id in nearby.index:
                assert isinstance(p.peer, Inbox)
                last = [m for m in p.peer.messages if m["type"] == "nearby"][-1]
                told = [(x["participant_id"], x["distance"]) for x in last["people"]]
                fresh = [(x["participant_id"], x["distance"]) for x in nearby.people(p)]
                assert told == fresh, f"step {step}: {p.peer.display_name} was told a stale list"
        heard_anyone += bool(live)
    assert heard_anyone > STEPS // 2, "the walk should keep people in range most of the time"


async def test_a_dropped_peer_keeps_its_row_until_its_owner_leaves(
    registry: RoomRegistry,
) -> None:
    """A failed peer connection is dropped by the media room; the client re-offers and
    must hear the same people without waiting for its next fix."""
    nearby = NearbyRoom(registry)
    registry.on_leave.append(nearby.leave)
    registry.media_started[NEARBY_ROOM] = nearby.media_started
    a = await registry.join(NEARBY_ROOM, Inbox("guest:a", "A"), radius_m=500.0)
    b = await registry.join(NEARBY_ROOM, Inbox("guest:b", "B"), radius_m=500.0)
    media = await registry.media(NEARBY_ROOM)
    nearby.move(a, BASE_LAT, BASE_LON)
    nearby.move(b, BASE_LAT + 100 / M_PER_DEG_LAT, BASE_LON)
    pa, pb = a.participant_id, b.participant_id
    assert media.audibility() == {pa: {pb: 1.0}, pb: {pa: 1.0}}

    await media.disconnect(pa)  # what a failed peer connection leads to
    assert media.audibility() == {pa: {pb: 1.0}, pb: {pa: 1.0}}

    await registry.leave(a)  # leaving the room is what drops the row
    assert media.audibility() == {pb: {}}
