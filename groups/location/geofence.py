"""Place (geofence) membership with hysteresis and accuracy awareness. Pure.

Why this shape: a phone's fix is a circle (point + accuracy), not a point.
Switching state on the bare point makes a member standing near the border,
or a 200 m-accuracy fix landing on it, flap enter/leave/enter. So:

* **enter** needs the fix's circle to sit mostly inside the place: the
  distance to the centre plus the accuracy (capped at half the radius, so
  small places stay enterable with ordinary GPS) must be within the radius,
  and the fix must be reasonably accurate at all (``ENTER_MAX_ACCURACY_M``);
* **leave** needs the whole circle outside the place grown by a hysteresis
  band: distance minus the full accuracy beyond ``radius + band``.

Between the two thresholds nothing changes. A coarse fix on the border fails
both tests, so it cannot flap. The first decisive fix for a (member, place)
sets the state silently: "entered" means we saw the member come in.
Fixes older than the last one used are ignored (phones flush out of order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from groups.geo import haversine_m

log = logging.getLogger(__name__)

HYSTERESIS_MIN_M = 25.0
HYSTERESIS_FRACTION = 0.1  # of the place's radius
ENTER_ACCURACY_CAP_FRACTION = 0.5  # of the radius: how much of the accuracy counts for entry
ENTER_MAX_ACCURACY_M = 500.0  # a cell-tower guess is no evidence of being anywhere


class PlaceState(StrEnum):
    unknown = "unknown"
    inside = "inside"
    outside = "outside"


class TransitionKind(StrEnum):
    enter = "enter"
    leave = "leave"


@dataclass(frozen=True, slots=True)
class Circle:
    """A place as geometry only."""

    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Tracked:
    """One member's state for one place, and the time of the fix that set it."""

    state: PlaceState = PlaceState.unknown
    last_ts: float = float("-inf")


def hysteresis_m(radius_m: float) -> float:
    return max(HYSTERESIS_MIN_M, HYSTERESIS_FRACTION * radius_m)


def classify(place: Circle, lat: float, lon: float, accuracy_m: float) -> PlaceState:
    """What this one fix says: inside, outside, or ``unknown`` (not decisive either way)."""
    distance = haversine_m(place.lat, place.lon, lat, lon)
    if accuracy_m <= ENTER_MAX_ACCURACY_M:
        slack = min(accuracy_m, ENTER_ACCURACY_CAP_FRACTION * place.radius_m)
        if distance + slack <= place.radius_m:
            return PlaceState.inside
    if distance - accuracy_m >= place.radius_m + hysteresis_m(place.radius_m):
        return PlaceState.outside
    return PlaceState.unknown


def step(
    place: Circle, tracked: Tracked, lat: float, lon: float, accuracy_m: float, ts: float
) -> tuple[Tracked, TransitionKind | None]:
    """Advance one (member, place) state by one fix; returns the new state and any transition."""
    if ts < tracked.last_ts:
        return tracked, None
    verdict = classify(place, lat, lon, accuracy_m)
    if verdict is PlaceState.unknown or verdict is tracked.state:
        return Tracked(tracked.state, ts), None
    transition: TransitionKind | None = None
    if tracked.state is not PlaceState.unknown:
        transition = TransitionKind.enter if verdict is PlaceState.inside else TransitionKind.leave
    return Tracked(verdict, ts), transition
