"""Geofences: a recorded walk produces exactly the expected enter/leave, no flapping. Pure."""

from __future__ import annotations

import random

import pytest

from groups.geo import destination
from groups.location.geofence import (
    Circle,
    PlaceState,
    Tracked,
    TransitionKind,
    classify,
    hysteresis_m,
    step,
)

HOME = Circle(52.5200, 13.4050, 150.0)


def at(distance_m: float, bearing_deg: float = 90.0) -> tuple[float, float]:
    return destination(HOME.lat, HOME.lon, bearing_deg, distance_m)


CLASSIFY = [
    # distance from centre, accuracy, verdict
    (0.0, 10.0, PlaceState.inside),
    (130.0, 10.0, PlaceState.inside),
    (145.0, 10.0, PlaceState.unknown),  # circle pokes out: not proof of entry
    (150.0, 200.0, PlaceState.unknown),  # the coarse border fix: neither
    (150.0, 5.0, PlaceState.unknown),  # on the border: neither
    (0.0, 200.0, PlaceState.inside),  # coarse but centred: capped slack (75 m) fits
    (0.0, 800.0, PlaceState.unknown),  # a cell-tower guess proves nothing
    (190.0, 5.0, PlaceState.outside),  # beyond radius + band (25 m)
    (180.0, 10.0, PlaceState.unknown),  # inside the band
    (400.0, 200.0, PlaceState.outside),
    (300.0, 200.0, PlaceState.unknown),
]


@pytest.mark.parametrize(("distance", "accuracy", "verdict"), CLASSIFY)
def test_classify(distance: float, accuracy: float, verdict: PlaceState) -> None:
    assert classify(HOME, *at(distance), accuracy) is verdict


def test_hysteresis_band() -> None:
    assert hysteresis_m(50) == 25
    assert hysteresis_m(1_000) == 100


def recorded_walk() -> list[tuple[float, float, float, float]]:
    """A member's track as a phone reports it: (lat, lon, accuracy_m, ts).

    Approach from 600 m, stay inside, dither on the border with GPS noise and
    coarse 200 m fixes for ten minutes, leave to 600 m, come back, and finally
    stay outside near the border (a cafe next door) with noisy fixes.
    """
    rng = random.Random(42)
    track: list[tuple[float, float, float, float]] = []
    ts = 1_800_000_000.0

    def fix(distance: float, accuracy: float, bearing: float = 90.0) -> None:
        nonlocal ts
        ts += 10.0
        track.append((*at(max(0.0, distance), bearing), accuracy, ts))

    for d in range(600, -1, -25):  # walk in
        fix(d, rng.uniform(5, 15))
    for _ in range(60):  # dither on the border, noisy and sometimes coarse
        coarse = rng.random() < 0.3
        fix(150 + rng.uniform(-20, 20), 200.0 if coarse else rng.uniform(8, 30),
            rng.uniform(0, 360))
    for d in range(150, 601, 25):  # walk out
        fix(d, rng.uniform(5, 15))
    for d in range(600, 49, -50):  # come back
        fix(d, rng.uniform(5, 15), 200.0)
    for d in range(50, 301, 50):  # and out again to the cafe next door
        fix(d, rng.uniform(5, 15), 200.0)
    for _ in range(60):  # at the cafe, 20-40 m outside the border, noisy
        fix(170 + rng.uniform(0, 20), rng.uniform(10, 40), rng.uniform(190, 210))
    return track


def run(track: list[tuple[float, float, float, float]]) -> list[TransitionKind]:
    tracked = Tracked()
    events: list[TransitionKind] = []
    for lat, lon, accuracy, ts in track:
        tracked, transition = step(HOME, tracked, lat, lon, accuracy, ts)
        if transition is not None:
            events.append(transition)
    return events


def test_recorded_walk_produces_exactly_the_expected_events() -> None:
    # the first decisive fix (outside, 600 m) sets the state silently
    assert run(recorded_walk()) == [
        TransitionKind.enter, TransitionKind.leave, TransitionKind.enter, TransitionKind.leave,
    ]


def test_coarse_fixes_on_the_border_never_flap() -> None:
    rng = random.Random(1)
    for start in (PlaceState.inside, PlaceState.outside):
        tracked = Tracked(start, 0.0)
        for i in range(500):
            lat, lon = at(150 + rng.uniform(-30, 30), rng.uniform(0, 360))
            tracked, transition = step(HOME, tracked, lat, lon, 200.0, float(i + 1))
            assert transition is None
        assert tracked.state is start


def test_first_fix_sets_state_silently_and_old_fixes_are_ignored() -> None:
    tracked, transition = step(HOME, Tracked(), *at(0), 10.0, 100.0)
    assert (tracked.state, transition) == (PlaceState.inside, None)
    stale, transition = step(HOME, tracked, *at(900), 10.0, 50.0)  # older than the last fix
    assert (stale, transition) == (tracked, None)
    _, transition = step(HOME, tracked, *at(900), 10.0, 150.0)
    assert transition is TransitionKind.leave
