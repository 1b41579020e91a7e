"""Proximity: the H3 index's audible sets equal a brute-force haversine check.

Pure: no event loop. The property test scatters thousands of people with
random radii over a few km (dense enough that most have neighbours), at
latitudes from the equator to the Arctic and across the antimeridian, then
moves some of them and checks the incremental sets and the reported changes.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import BadRequest, NotFound
from groups.geo import destination, haversine_m
from groups.location.privacy import round_distance_m
from groups.nearby.proximity import (
    GAIN_STEPS,
    RADIUS_MAX_M,
    RADIUS_MIN_M,
    RING_SAFETY,
    GainCurve,
    ProximityIndex,
    _ring_k,
    brute_force_pairs,
    stranger_gain,
    validate_radius,
)

BOUNDARY_TOLERANCE_M = 0.01  # pairs this close to their range edge may go either way


def _scatter(
    rng: random.Random, n: int, lat0: float, lon0: float, spread_m: float
) -> dict[str, tuple[float, float, float]]:
    people = {}
    for i in range(n):
        lat, lon = destination(lat0, lon0, rng.uniform(0, 360), spread_m * math.sqrt(rng.random()))
        people[f"p{i}"] = (lat, lon, rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
    return people


def _random_step(
    rng: random.Random, people: dict[str, tuple[float, float, float]], who: str,
    origin: tuple[float, float], mean_step_m: float,
) -> tuple[str, float, float, float | None]:
    """A batch entry: ``who`` (if new, from ``origin``) walks; one in five re-picks a radius."""
    lat, lon, radius = people.get(who, (*origin, 500.0))
    lat, lon = destination(lat, lon, rng.uniform(0, 360), rng.expovariate(1 / mean_step_m))
    new_radius = rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M) if rng.random() < 0.2 else None
    people[who] = (lat, lon, new_radius or radius)
    return who, lat, lon, new_radius


def _ambiguous(people: dict[str, tuple[float, float, float]], a: str, b: str) -> bool:
    (lat1, lon1, r1), (lat2, lon2, r2) = people[a], people[b]
    return abs(haversine_m(lat1, lon1, lat2, lon2) - min(r1, r2)) < BOUNDARY_TOLERANCE_M


def _assert_matches(index: ProximityIndex, people: dict[str, tuple[float, float, float]]) -> None:
    expected = brute_force_pairs(people, index.curve)
    got = index.pairs()
    wrong = (set(expected) ^ got)
    wrong = {pair for pair in wrong if not _ambiguous(people, *pair)}
    assert not wrong, f"{len(wrong)} pairs differ from brute force, e.g. {sorted(wrong)[:3]}"
    gains = index.audibility(people)
    for (a, b), gain_q in expected.items():
        if (a, b) in got:
            heard = gains[a][b]
            assert heard == gains[b][a]
            assert abs(heard * GAIN_STEPS - gain_q) <= 1


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    lat0=st.floats(-70.0, 70.0),
    lon0=st.sampled_from([-179.99, -122.4, 0.0, 13.4, 151.2, 179.99]),
    spread_m=st.sampled_from([1_500.0, 4_000.0, 8_000.0]),
)
def test_index_equals_brute_force(seed: int, lat0: float, lon0: float, spread_m: float) -> None:
    rng = random.Random(seed)
    people = _scatter(rng, 2_000, lat0, lon0, spread_m)
    index = ProximityIndex()
    for pid, (lat, lon, radius) in people.items():
        index.upsert(pid, lat, lon, radius)
    _assert_matches(index, people)

    for _ in range(200):  # incremental: moves and radius changes, checked for reported changes
        pid = rng.choice(list(people))
        lat, lon, radius = people[pid]
        before = index.neighbours(pid)
        if rng.random() < 0.2:
            radius = rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M)
            changed = index.set_radius(pid, radius)
        else:
            lat, lon = destination(lat, lon, rng.uniform(0, 360), rng.expovariate(1 / 200))
            changed = index.move(pid, lat, lon)
        people[pid] = (lat, lon, radius)
        after = index.neighbours(pid)
        # only pairs with the mover can change; the final brute-force check catches any other
        assert changed == (before ^ after) | ({pid} if before != after else set())
    _assert_matches(index, people)

    for _ in range(3):  # batches: many movers at once (some twice), plus newcomers
        before_all = {p: index.neighbours(p) for p in people}
        batch = []
        for _ in range(400):
            pid = rng.choice(list(people)) if rng.random() < 0.95 else f"new{rng.random()}"
            batch.append(_random_step(rng, people, pid, (lat0, lon0), 300))
        changed = index.update_many(batch)
        after_all = {p: index.neighbours(p) for p in people}
        assert changed == {p for p in people if before_all.get(p, set()) != after_all[p]}
        _assert_matches(index, people)


def test_high_latitude_index_equals_brute_force() -> None:
    rng = random.Random(7)
    people = _scatter(rng, 1_500, 78.2, 15.6, 5_000.0)  # Svalbard: narrow longitude cells
    index = ProximityIndex()
    for pid, (lat, lon, radius) in people.items():
        index.upsert(pid, lat, lon, radius)
    _assert_matches(index, people)


def test_mutual_range_rule() -> None:
    """A(1000 m) and B(300 m) 500 m apart: A could reach B, B cannot reach A, so neither hears."""
    index = ProximityIndex()
    lat, lon = 48.0, 11.0
    index.upsert("a", lat, lon, 1000)
    index.upsert("b", *destination(lat, lon, 90, 500), 300)
    assert index.audible("a") == {} and index.audible("b") == {}
    changed = index.set_radius("b", 600)
    assert changed == {"a", "b"}
    assert set(index.audible("a")) == {"b"} and set(index.audible("b")) == {"a"}


def test_move_reports_exactly_the_changed_listeners() -> None:
    index = ProximityIndex()
    lat, lon = 40.0, -3.7
    index.upsert("a", lat, lon, 500)
    index.upsert("b", *destination(lat, lon, 0, 200), 500)
    far = destination(lat, lon, 180, 5_000)
    assert index.upsert("c", *far, 500) == set()  # nobody near: nothing changes
    assert index.move("c", *destination(lat, lon, 180, 250)) == {"a", "b", "c"}
    assert index.move("c", *destination(lat, lon, 180, 260)) == set()  # gains shift, sets don't
    assert index.remove("c") == {"a", "b"}
    assert index.neighbours("a") == {"b"}
    assert "c" not in index


# gain curve: full volume in the nearest quarter, linear fade to the floor at the edge
GAIN_CASES = [
    (0.0, 1000.0, 1.0),
    (250.0, 1000.0, 1.0),
    (625.0, 1000.0, 0.15 + 0.85 * 0.5),
    (1000.0, 1000.0, 0.15),
    (1000.1, 1000.0, 0.0),
]


@pytest.mark.parametrize(("distance", "range_m", "expected"), GAIN_CASES)
def test_gain_curve(distance: float, range_m: float, expected: float) -> None:
    assert GainCurve().gain(distance, range_m) == pytest.approx(expected)


def test_gain_falls_with_distance_in_the_index() -> None:
    curve = GainCurve(full_fraction=0.25, floor=0.2, exponent=2.0)
    index = ProximityIndex(curve)
    index.upsert("l", 0.0, 0.0, 1000)
    for i, distance in enumerate([100, 400, 700, 990]):
        index.upsert(f"s{i}", *destination(0.0, 0.0, 45, distance), 1000)
    gains = index.audible("l")
    assert gains["s0"] == 1.0
    assert 1.0 > gains["s1"] > gains["s2"] > gains["s3"] >= 0.2
    assert gains["s3"] == pytest.approx(curve.gain(990, 1000), abs=1 / GAIN_STEPS)


RADIUS_CASES = [(100, 100.0), (2000, 2000.0), (512.5, 512.5)]
BAD_RADII = [99.9, 2000.1, 0, -5, float("nan"), float("inf"), "500", True]


@pytest.mark.parametrize(("value", "expected"), RADIUS_CASES)
def test_radius_accepted(value: float, expected: float) -> None:
    assert validate_radius(value) == expected


@pytest.mark.parametrize("value", BAD_RADII)
def test_radius_rejected_and_nothing_stored(value: object) -> None:
    index = ProximityIndex()
    with pytest.raises(BadRequest):
        index.upsert("a", 10.0, 10.0, value)  # type: ignore[arg-type]
    assert "a" not in index and len(index) == 0


@pytest.mark.parametrize(("lat", "lon"), [(91, 0), (0, 181), (float("nan"), 0), (0, float("inf"))])
def test_bad_coordinates_rejected(lat: float, lon: float) -> None:
    index = ProximityIndex()
    with pytest.raises(BadRequest):
        index.upsert("a", lat, lon, 500)
    assert len(index) == 0


def test_batch_validates_everything_before_changing_anything() -> None:
    index = ProximityIndex()
    index.upsert("a", 1.0, 1.0, 500)
    with pytest.raises(BadRequest):
        index.update_many([("a", 1.001, 1.0, None), ("b", 95.0, 1.0, None)])
    assert index.latlon["a"] == (1.0, 1.0) and "b" not in index


def test_unknown_person() -> None:
    with pytest.raises(NotFound):
        ProximityIndex().move("ghost", 0.0, 0.0)


@pytest.mark.parametrize(("radius", "edge"), [(100, 200), (500, 200), (2000, 531), (700, 75)])
def test_ring_k_covers_the_reach(radius: float, edge: float) -> None:
    """The next ring's apothem (1.5 (k+1) e), shrunk by the safety factor, clears radius + 2e."""
    k = _ring_k(radius, edge)
    assert 1.5 * (k + 1) * edge / RING_SAFETY > radius + 2 * edge


def test_ring_reaches_across_the_antimeridian_at_the_equator() -> None:
    """A pair the flat-lattice ring size missed (found by the property test)."""
    index = ProximityIndex()
    index.upsert("a", -0.0008629933376500106, 179.99946502245712, 688.7622092650072)
    index.upsert("b", 0.0008836752736689437, -179.9947353932729, 1317.8478556533055)
    assert index.neighbours("a") == {"b"}


@pytest.mark.parametrize(("near", "far", "range_m"), [
    (110.0, 124.9, 300.0),  # both "~100 m"
    (126.0, 174.9, 300.0),  # both "~150 m"
    (260.0, 274.0, 280.0),  # "~250 m"
    (275.0, 280.0, 280.0),  # "~300 m", past the range: capped to the range's floor gain
    (1510.0, 1520.0, 2000.0),
])
def test_stranger_gain_is_a_function_of_the_rounded_distance(near: float, far: float,
                                                               range_m: float) -> None:
    curve = GainCurve()
    assert stranger_gain(near, range_m, curve) == stranger_gain(far, range_m, curve)
    # while the exact curve tells them apart (what a stranger could invert before)
    assert curve.quantized(near, range_m) != curve.quantized(far, range_m)
    gain = stranger_gain(near, range_m, curve)
    assert curve.floor <= gain <= 1.0 and round(gain * GAIN_STEPS) == gain * GAIN_STEPS


def test_stranger_gain_still_falls_with_distance() -> None:
    curve = GainCurve()
    gains = [stranger_gain(d, 2000.0, curve) for d in range(0, 2001, 50)]
    assert gains[0] == 1.0 and gains[-1] == curve.floor
    assert all(a >= b for a, b in itertools.pairwise(gains))
    assert len(set(gains)) > 20


def test_audible_rounded_matches_the_scalar_rules() -> None:
    """The vectorized rounding and gain equal ``round_distance_m`` and ``stranger_gain``,
    ties at half steps included (both round half to even)."""
    rng = random.Random(11)
    index = ProximityIndex()
    for n in range(300):
        index.upsert(f"p{n}", 46.0 + rng.uniform(0, 0.03), 7.0 + rng.uniform(0, 0.04),
                     rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M))
    checked = 0
    for n in range(300):
        pid = f"p{n}"
        exact = index.audible_with_distance(pid)
        for other, (metres, gain) in index.audible_rounded(pid).items():
            distance = exact[other][1]
            pair_range = min(index.radius_m(pid), index.radius_m(other))
            assert metres == round_distance_m(distance)
            assert gain == stranger_gain(distance, pair_range, index.curve)
            checked += 1
    assert checked > 1_000
