"""What others may learn of a member's position: precise, approximate, or a rounded distance.

Pure. ``approximate`` snaps a fix to the centre of its H3 resolution-8 cell
(cells ~1 km across, edge ~530 m; H3 is Uber's well-kept hexagonal grid
library), widens the accuracy to match, and drops speed/heading/battery, so
a member sharing "approximately" reveals which square kilometre they are in
and nothing finer. Snapping to a fixed grid (rather than adding noise) means
repeated fixes cannot be averaged back to the true point.

Strangers in a nearby room never see coordinates at all: only a distance
rounded to 50 m steps, as a string such as ``"~150 m"``.
"""

from __future__ import annotations

import math

import h3

from groups.location.fixes import Fix

APPROX_H3_RES = 8
APPROX_ACCURACY_M = 1_000.0
APPROX_DECIMALS = 4  # ~11 m: the cell centre needs no more digits than this
STRANGER_STEP_M = 50


def approximate(fix: Fix) -> Fix:
    """The fix coarsened to ~1 km: cell centre, accuracy >= 1 km, no motion or battery data."""
    cell = h3.latlng_to_cell(fix.lat, fix.lon, APPROX_H3_RES)
    lat, lon = h3.cell_to_latlng(cell)
    return Fix(
        lat=round(lat, APPROX_DECIMALS),
        lon=round(lon, APPROX_DECIMALS),
        accuracy_m=max(fix.accuracy_m, APPROX_ACCURACY_M),
        ts=float(math.floor(fix.ts / 60.0) * 60),  # minute resolution: no timing side channel
    )


def round_distance_m(distance_m: float) -> int:
    """Distance rounded to the nearest 50 m step, never below one step."""
    if not math.isfinite(distance_m) or distance_m < 0:
        raise ValueError("distance must be a finite, non-negative number")
    steps = max(1, round(distance_m / STRANGER_STEP_M))
    return steps * STRANGER_STEP_M


def stranger_distance(distance_m: float) -> str:
    """What a stranger sees of another's position: ``"~150 m"``."""
    return distance_text(round_distance_m(distance_m))


def distance_text(rounded_m: int) -> str:
    """An already rounded distance as strangers see it: ``"~150 m"``."""
    return f"~{rounded_m} m"
