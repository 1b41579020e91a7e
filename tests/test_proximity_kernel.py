"""The compiled kernel's paths, through ``ProximityIndex``, against brute force.

Pure: no event loop. Tiny limits force the rare paths to run many times:
an overflow of a few entries makes the cell lists rebuild over and over, a
small audible-set pool makes blocks move and the pool compact, a small
ring cache gets dropped mid-sequence, and joins and leaves reuse slots
while the crowd grows past the initial capacity. After each random
sequence the pairs equal ``brute_force_pairs``, and every update reports
exactly the listeners whose set changed.
"""

from __future__ import annotations

import random

import pytest

from groups.geo import destination
from groups.nearby import proximity
from groups.nearby.proximity import INITIAL_CAPACITY, RADIUS_MAX_M, RADIUS_MIN_M, ProximityIndex
from tests.test_proximity import _assert_matches, _random_step, _scatter

People = dict[str, tuple[float, float, float]]


@pytest.fixture(autouse=True)
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proximity, "ADJ_POOL_MIN_ENTRIES", 64)
    monkeypatch.setattr(proximity, "RING_POOL_MAX_CELLS", 2_000)
    monkeypatch.setattr(proximity, "CACHE_MAX_ENTRIES", 300)


def _snapshot(index: ProximityIndex, people: People) -> dict[str, set[str]]:
    return {pid: index.neighbours(pid) for pid in people}


def _changed(before: dict[str, set[str]], after: dict[str, set[str]]) -> set[str]:
    return {pid for pid in before.keys() | after.keys()
            if before.get(pid, set()) != after.get(pid, set())}


@pytest.mark.parametrize(("seed", "lat0", "lon0"), [
    (1, 52.52, 13.405),  # Berlin
    (2, 0.001, 179.995),  # the equator at the antimeridian
    (3, 78.2, 15.6),  # Svalbard
])
def test_churn_equals_brute_force(seed: int, lat0: float, lon0: float) -> None:
    """Joins, leaves, long moves, radius changes and batches, with rebuilds and compactions."""
    rng = random.Random(seed)
    people = _scatter(rng, 900, lat0, lon0, 3_000.0)
    index = ProximityIndex(overflow_max=8)
    for pid, (lat, lon, radius) in people.items():
        index.upsert(pid, lat, lon, radius)
    _assert_matches(index, people)
    joined = len(people)
    for step in range(1, 1_601):
        roll = rng.random()
        pid = rng.choice(sorted(people))
        before = index.neighbours(pid)
        if roll < 0.15:  # a newcomer (often in a slot someone left)
            pid = f"j{joined}"
            joined += 1
            lat, lon = destination(lat0, lon0, rng.uniform(0, 360), rng.uniform(0, 3_000))
            people[pid] = (lat, lon, rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
            changed = index.upsert(pid, *people[pid])
            after = index.neighbours(pid)
            assert changed == (after | {pid} if after else set())
        elif roll < 0.25:
            del people[pid]
            assert index.remove(pid) == before
            assert pid not in index
        elif roll < 0.35:
            lat, lon, _ = people[pid]
            people[pid] = (lat, lon, rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
            changed = index.set_radius(pid, people[pid][2])
            after = index.neighbours(pid)
            assert changed == (before ^ after) | ({pid} if before != after else set())
        elif roll < 0.38:  # a batch: some move twice, some are new, some change radius
            before_all = _snapshot(index, people)
            batch = []
            for _ in range(40):
                who = rng.choice(sorted(people)) if rng.random() < 0.9 else f"j{joined}"
                if who not in people:
                    joined += 1
                batch.append(_random_step(rng, people, who, (lat0, lon0), 400))
            changed = index.update_many(batch)
            assert changed == _changed(before_all, _snapshot(index, people))
        else:  # a walk or a jump, across cell borders at both resolutions
            lat, lon, radius = people[pid]
            lat, lon = destination(lat, lon, rng.uniform(0, 360), rng.expovariate(1 / 300))
            people[pid] = (lat, lon, radius)
            changed = index.move(pid, lat, lon)
            after = index.neighbours(pid)
            assert changed == (before ^ after) | ({pid} if before != after else set())
        if step % 400 == 0:
            _assert_matches(index, people)
    stats = index.stats()
    assert stats["slots"] > INITIAL_CAPACITY  # grew
    assert min(stats["rebuilds_res8"], stats["rebuilds_res9"]) >= 10
    assert stats["compactions"] >= 3


def test_crowd_where_everyone_hears_everyone() -> None:
    """Big sets: blocks outgrow their room, the pool compacts, a batch runs out of pool midway."""
    rng = random.Random(4)
    lat0, lon0 = 45.83, 6.86
    people: People = {}
    index = ProximityIndex(overflow_max=4)
    for i in range(300):
        lat, lon = destination(lat0, lon0, rng.uniform(0, 360), rng.uniform(0, 40))
        people[f"c{i}"] = (lat, lon, 100.0)
        index.upsert(f"c{i}", lat, lon, 100.0)
    assert all(len(index.neighbours(pid)) == 299 for pid in people)
    _assert_matches(index, people)

    far = destination(lat0, lon0, 90, 5_000)  # half walk away together, then come back at once
    away = sorted(people)[::2]
    index.update_many([(pid, *far, None) for pid in away])
    for pid in away:
        people[pid] = (*far, 100.0)
    _assert_matches(index, people)
    back = []
    for pid in away:
        lat, lon = destination(lat0, lon0, rng.uniform(0, 360), rng.uniform(0, 40))
        people[pid] = (lat, lon, 100.0)
        back.append((pid, lat, lon, None))
    before = _snapshot(index, people)
    assert index.update_many(back) == _changed(before, _snapshot(index, people))
    _assert_matches(index, people)

    for pid in sorted(people)[::3]:
        assert index.remove(pid) == people.keys() - {pid}
        del people[pid]
    _assert_matches(index, people)
    assert index.stats()["compactions"] >= 3


def test_back_and_forth_across_a_border() -> None:
    """A walker crossing one border again and again: stale copies, revived list entries."""
    index = ProximityIndex(overflow_max=2)
    rng = random.Random(5)
    lat0, lon0 = 48.137, 11.575
    people = _scatter(rng, 200, lat0, lon0, 1_500.0)
    for pid, (lat, lon, radius) in people.items():
        index.upsert(pid, lat, lon, radius)
    here, there = (lat0, lon0), destination(lat0, lon0, 30, 700)
    for i in range(30):
        spot = here if i % 2 else there
        people["p0"] = (*spot, people["p0"][2])
        index.move("p0", *spot)
        bystander = f"p{1 + i % 20}"  # others cross too, so the overflow keeps filling
        lat, lon, radius = people[bystander]
        people[bystander] = (*destination(lat, lon, rng.uniform(0, 360), 600), radius)
        index.move(bystander, *people[bystander][:2])
        _assert_matches(index, people)
    assert index.stats()["rebuilds_res8"] >= 5


def test_one_batch_grows_the_index() -> None:
    """A batch of newcomers larger than the initial capacity: slots grow in the middle of it."""
    rng = random.Random(6)
    people = _scatter(rng, INITIAL_CAPACITY + 500, -33.87, 151.21, 2_500.0)  # Sydney
    index = ProximityIndex(overflow_max=16)
    changed = index.update_many([(pid, lat, lon, radius) for pid, (lat, lon, radius)
                                 in people.items()])
    assert changed == {pid for pid in people if index.neighbours(pid)}
    _assert_matches(index, people)
    assert index.stats()["slots"] == 2 * INITIAL_CAPACITY


def test_warm_up_compiles_every_kernel_before_the_server_serves() -> None:
    """A fresh process: after ``warm_up`` no kernel is left to compile on the event loop.

    Python calls the public kernels; the private ones are compiled into them.
    """
    import subprocess
    import sys

    script = (
        "from groups.nearby import kernel as k, proximity\n"
        "proximity.warm_up()\n"
        "public = {n: f for n, f in vars(k).items() if hasattr(f, 'signatures') and n[0] != '_'}\n"
        "print([n for n, f in public.items() if not f.signatures])\n"
        "print(len(public))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split("\n")
    assert out[0] == "[]", f"kernels never run by warm_up: {out[0]}"
    assert int(out[1]) >= 6  # move, place_many, settle_many, leave, compacted_size, compact
