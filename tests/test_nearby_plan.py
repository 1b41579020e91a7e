"""The nearby room patches the mixer's plan and its messages pair by pair; both must
equal a full rebuild.

A fix changes only the pairs that include the mover (pairs are mutual), so
the room patches those entries of the plan and of what each participant has
been told. After every step of a random walk with joins, radius changes and
leaves, the live plan in the media room must equal the plan built from
scratch from the index, no row may name someone who left, and the last
``nearby`` message each participant got must list exactly the people,
rounded distances and gains a fresh computation gives.

Strangers learn no more than the rounded distance: two placements whose
true distances differ but round alike give identical frames and identical
mixer gains, and every number a stranger receives over a walk in 1 m steps
is their own radius, a 50 m step or the gain of such a step.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from groups.nearby.proximity import GAIN_STEPS, RADIUS_MAX_M, RADIUS_MIN_M, GainCurve
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
        rebuilt = nonempty(nearby.plan(people))
        assert live == rebuilt, f"step {step}: the patched plan drifted from the index"
        assert all(speaker in people for row in live.values() for speaker in row), (
            f"step {step}: a row names someone who left"
        )
        for p in people.values():
            if p.participant_id in nearby.index:
                assert isinstance(p.peer, Inbox)
                last = [m for m in p.peer.messages if m["type"] == "nearby"][-1]
                told = [(x["participant_id"], x["distance"], x["gain"]) for x in last["people"]]
                fresh = [(x["participant_id"], x["distance"], x["gain"])
                         for x in nearby.people(p)]
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


def inbox(participant: Participant) -> Inbox:
    assert isinstance(participant.peer, Inbox)
    return participant.peer


def north_of_base(metres: float) -> tuple[float, float]:
    return BASE_LAT + metres / M_PER_DEG_LAT, BASE_LON


async def _two_strangers(metres: float, radius_a: float,
                         radius_b: float) -> tuple[list[Any], dict[str, dict[str, float]]]:
    """A at the base, B ``metres`` north: what each was sent and the mixer's gains, with
    the random participant ids replaced by names."""
    rooms = RoomRegistry()
    try:
        nearby = NearbyRoom(rooms)
        rooms.on_leave.append(nearby.leave)
        rooms.media_started[NEARBY_ROOM] = nearby.media_started
        a = await rooms.join(NEARBY_ROOM, Inbox("guest:a", "A"), radius_m=radius_a)
        b = await rooms.join(NEARBY_ROOM, Inbox("guest:b", "B"), radius_m=radius_b)
        media = await rooms.media(NEARBY_ROOM)
        nearby.move(a, *north_of_base(0.0))
        nearby.move(b, *north_of_base(metres))
        nearby.move(a, *north_of_base(0.0))  # a fix that changes nothing sends nothing
        names = {a.participant_id: "A", b.participant_id: "B"}
        frames = json.loads(json.dumps(
            [inbox(p).messages for p in (a, b)]
        ).replace(a.participant_id, "A").replace(b.participant_id, "B"))
        plan = media.audibility() or {}
        gains = {names[k]: {names[o]: g for o, g in row.items()} for k, row in plan.items()}
        return frames, gains
    finally:
        await rooms.close()


@pytest.mark.parametrize(("near", "far", "radius_a", "radius_b"), [
    (110.0, 124.0, 300.0, 300.0),  # both "~100 m", full gain ends at 75 m
    (130.0, 170.0, 500.0, 300.0),  # both "~150 m"
    (260.0, 274.0, 280.0, 900.0),  # "~250 m" in a range that is no multiple of 50
    (276.0, 279.0, 280.0, 280.0),  # "~300 m" just inside a 280 m range
])
async def test_distances_that_round_alike_give_identical_frames_and_gains(
    near: float, far: float, radius_a: float, radius_b: float
) -> None:
    frames_near, gains_near = await _two_strangers(near, radius_a, radius_b)
    frames_far, gains_far = await _two_strangers(far, radius_a, radius_b)
    assert gains_near["A"]["B"] == gains_near["B"]["A"]
    assert gains_near == gains_far, "the mixer's gain says more than the rounded distance"
    assert frames_near == frames_far, "the frames say more than the rounded distance"
    heard = [m for m in frames_near[0] if m["type"] == "nearby" and m["people"]]
    assert heard, "A should hear B"


async def test_every_number_a_stranger_receives_is_a_step(registry: RoomRegistry) -> None:
    """B walks away from A in 1 m steps while C stands still; A, B and C receive only
    their own radius, 50 m steps and the gains of such steps, and A gets a new list only
    when B's step changes."""
    nearby = NearbyRoom(registry)
    registry.on_leave.append(nearby.leave)
    registry.media_started[NEARBY_ROOM] = nearby.media_started
    radii = {"A": 700.0, "B": 430.0, "C": 610.0}
    people = {name: await registry.join(NEARBY_ROOM, Inbox(f"guest:{name}", name),
                                        radius_m=radius)
              for name, radius in radii.items()}
    media = await registry.media(NEARBY_ROOM)
    curve = GainCurve()
    nearby.move(people["A"], *north_of_base(0.0))
    nearby.move(people["C"], *north_of_base(-333.3))
    steps_seen = set()
    for metres in range(1, 460):
        nearby.move(people["B"], *north_of_base(metres + 0.37))
        row = (media.audibility() or {}).get(people["A"].participant_id, {})
        told = [m for m in inbox(people["A"]).messages if m["type"] == "nearby"][-1]
        by_id = {p["participant_id"]: p for p in told["people"]}
        assert {k: by_id[k]["gain"] for k in row} == row, "the mixer and the list disagree"
        steps_seen.add(by_id.get(people["B"].participant_id, {}).get("distance"))
    # allowed numbers: each pair's range is the smaller radius
    ranges = {min(x, y) for x in radii.values() for y in radii.values()}
    allowed_gains = {curve.quantized(min(k * 50.0, r), r) / GAIN_STEPS
                     for r in ranges for k in range(1, 60)}
    distance_text = re.compile(r"~([0-9]+) m")

    def scan(value: Any, key: str, own_radius: float) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                scan(v, k, own_radius)
        elif isinstance(value, list):
            for v in value:
                scan(v, key, own_radius)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int | float):
            if key == "radius_m":
                assert value == own_radius
            else:
                assert key == "gain" and value in allowed_gains, (key, value)
        elif key == "distance":
            match = distance_text.fullmatch(value)
            assert match and int(match.group(1)) % 50 == 0, value
        else:  # names, ids and the room's (empty) music state: nothing numeric
            assert key in {"type", "room", "participant_id", "display_name", "status",
                           "client_music"}, (key, value)

    for name, p in people.items():
        assert inbox(p).messages
        for message in inbox(p).messages:
            scan(message, "", radii[name])
    lists_for_a = [m for m in inbox(people["A"]).messages if m["type"] == "nearby"]
    # one list per change of B's step (in range: 50..450 m, then out): no more
    assert len(lists_for_a) <= len(steps_seen) + 2, (len(lists_for_a), steps_seen)


async def test_ghosts_of_another_node_are_heard_listed_and_piped(registry: RoomRegistry) -> None:
    """A guest of another node near ours is a ghost here: in the plan (as a speaker), in
    our guest's ``nearby`` list with a rounded distance only, and our guest's voice is
    piped to its node; when it walks off or is dropped, all of that goes."""
    from signaling.nearby import Ghost

    nearby = NearbyRoom(registry)
    registry.on_leave.append(nearby.leave)
    registry.media_started[NEARBY_ROOM] = nearby.media_started
    a = await registry.join(NEARBY_ROOM, Inbox("guest:a", "A"), radius_m=500.0)
    far = await registry.join(NEARBY_ROOM, Inbox("guest:f", "F"), radius_m=500.0)
    announced: list[str] = []
    nearby.on_local_fix.append(lambda p, lat, lon: announced.append(p.participant_id))
    nearby.move(a, BASE_LAT, BASE_LON)
    nearby.move(far, BASE_LAT + 5_000 / M_PER_DEG_LAT, BASE_LON)
    assert announced == [a.participant_id, far.participant_id]
    media = await registry.media(NEARBY_ROOM)
    ghost = Ghost("p_ghost", "n2", "Zoe", 500.0, seen_at=0.0)
    nearby.place_ghost(ghost, BASE_LAT + 120 / M_PER_DEG_LAT, BASE_LON)
    assert nonempty(media.audibility())[a.participant_id] == {
        "p_ghost": nearby.plan([a.participant_id])[a.participant_id]["p_ghost"]}
    assert nearby.piped_to(a.participant_id) == {"n2"}
    assert nearby.piped_to(far.participant_id) == set()
    assert nearby.hearers("p_ghost") == {a.participant_id}  # its speaking events: to a only
    assert isinstance(a.peer, Inbox)
    last = [m for m in a.peer.messages if m["type"] == "nearby"][-1]
    assert [(p["participant_id"], p["display_name"], p["distance"]) for p in last["people"]] == [
        ("p_ghost", "Zoe", "~100 m")]
    # the ghost walks out of range, back in, then its node stops announcing it
    nearby.place_ghost(ghost, BASE_LAT + 900 / M_PER_DEG_LAT, BASE_LON)
    assert nearby.piped_to(a.participant_id) == set()
    assert nonempty(media.audibility()) == {}
    nearby.place_ghost(ghost, BASE_LAT + 60 / M_PER_DEG_LAT, BASE_LON)
    assert nearby.piped_to(a.participant_id) == {"n2"}
    nearby.drop_ghost("p_ghost")
    assert nearby.piped_to(a.participant_id) == set()
    assert nonempty(media.audibility()) == {}
    assert [m for m in a.peer.messages if m["type"] == "nearby"][-1]["people"] == []
    # a ghost that claims the id of one of our guests is ignored
    nearby.place_ghost(Ghost(a.participant_id, "n2", "Impostor", 500.0, 0.0), BASE_LAT, BASE_LON)
    assert a.participant_id not in nearby.ghosts
