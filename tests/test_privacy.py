"""Privacy: approximate sharing reveals ~1 km, strangers see 50 m steps. Pure."""

from __future__ import annotations

import math
import random

import pytest

from groups.geo import destination, haversine_m
from groups.location.fixes import Fix
from groups.location.privacy import approximate, round_distance_m, stranger_distance

DISTANCES = [
    (0.0, "~50 m"),
    (24.9, "~50 m"),
    (74.9, "~50 m"),
    (75.0, "~100 m"),
    (149.0, "~150 m"),
    (163.0, "~150 m"),
    (1_990.0, "~2000 m"),
]


@pytest.mark.parametrize(("distance", "shown"), DISTANCES)
def test_stranger_distance_in_50_m_steps(distance: float, shown: str) -> None:
    assert stranger_distance(distance) == shown
    assert round_distance_m(distance) % 50 == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_stranger_distance_rejects_nonsense(bad: float) -> None:
    with pytest.raises(ValueError):
        stranger_distance(bad)


def test_approximate_is_about_a_kilometre_and_drops_details() -> None:
    rng = random.Random(3)
    for _ in range(500):
        lat, lon = rng.uniform(-80, 80), rng.uniform(-180, 180)
        fix = Fix(lat, lon, 5.0, 1_800_000_123.4, 3.0, 90.0, 55)
        coarse = approximate(fix)
        assert haversine_m(lat, lon, coarse.lat, coarse.lon) < 700  # within the ~1 km cell
        assert coarse.accuracy_m >= 1_000
        assert coarse.speed_mps is None and coarse.heading_deg is None
        assert coarse.battery_pct is None
        assert coarse.ts % 60 == 0


def test_approximate_hides_small_moves() -> None:
    """Walking 100 m inside a cell does not move the shared point at all (usually)."""
    lat, lon = 52.5200, 13.4050
    same = 0
    for bearing in range(0, 360, 10):
        moved = approximate(Fix(*destination(lat, lon, bearing, 100), 5.0, 0.0))
        same += (moved.lat, moved.lon) == (approximate(Fix(lat, lon, 5.0, 0.0)).lat,
                                           approximate(Fix(lat, lon, 5.0, 0.0)).lon)
    assert same >= 18  # most 100 m moves stay in the same cell
