"""Location fixes: what a member may send, checked before anything is stored.

Pure: ``parse_fix`` takes the wire dict (WebSocket ``location`` message or the
REST body, both OwnTracks-like: lat, lon, accuracy_m, ts, optional
speed_mps, heading_deg, battery_pct) and ``now``; it returns a ``Fix`` or
raises ``BadRequest`` naming the field. The same function serves both edges
so they cannot drift apart. ``FixLimiter`` is the per-member rate limit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest, RateLimited
from groups.limiter import Limiter, LocalLimiter
from protocol.limits import (
    ACCURACY_MAX_M,
    BATTERY_MAX_PCT,
    BATTERY_MIN_PCT,
    HEADING_MAX_DEG,
    HEADING_MIN_DEG,
    LAT_MAX_DEG,
    LAT_MIN_DEG,
    LON_MAX_DEG,
    LON_MIN_DEG,
    SPEED_MAX_MPS,
)

log = logging.getLogger(__name__)

FUTURE_SKEW_S = 60.0  # phone clocks drift; a minute ahead is tolerated, more is rejected
MAX_FIX_AGE_S = 7 * 24 * 3600.0  # buffered offline fixes up to a week old are still history

FIX_RATE_PER_S = 1.0  # sustained fixes per member per second
FIX_BURST = 30  # a background wake-up may flush this many buffered fixes at once


@dataclass(frozen=True, slots=True)
class Fix:
    """One validated position report. ``ts`` is the device's unix time in seconds."""

    lat: float
    lon: float
    accuracy_m: float
    ts: float
    speed_mps: float | None = None
    heading_deg: float | None = None
    battery_pct: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "lat": self.lat, "lon": self.lon, "accuracy_m": self.accuracy_m, "ts": self.ts,
        }
        if self.speed_mps is not None:
            body["speed_mps"] = self.speed_mps
        if self.heading_deg is not None:
            body["heading_deg"] = self.heading_deg
        if self.battery_pct is not None:
            body["battery_pct"] = self.battery_pct
        return body


def _number(data: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """A finite real number (bools and strings rejected: JSON ``true`` is not 1)."""
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required", detail={"field": name})
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number", detail={"field": name})
    number = float(value)
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number", detail={"field": name})
    return number


def _in_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise BadRequest(
            f"{name} must be in [{low:g}, {high:g}{bracket}", detail={"field": name, "value": value}
        )


def validate_lat_lon(lat: float, lon: float) -> None:
    """Raise ``BadRequest`` unless (lat, lon) is a finite point on the globe."""
    if (type(lat) is float and type(lon) is float
            and LAT_MIN_DEG <= lat <= LAT_MAX_DEG and LON_MIN_DEG <= lon <= LON_MAX_DEG):
        return  # the usual case in one test (NaN fails the comparisons); the rest explains
    for name, value in (("lat", lat), ("lon", lon)):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value):
            raise BadRequest(f"{name} must be a finite number", detail={"field": name})
    _in_range("lat", lat, LAT_MIN_DEG, LAT_MAX_DEG)
    _in_range("lon", lon, LON_MIN_DEG, LON_MAX_DEG)


def parse_fix(data: Mapping[str, Any], now: float) -> Fix:
    """Validate a wire location dict into a ``Fix``; ``ts`` defaults to ``now``."""
    lat = _number(data, "lat", required=True)
    lon = _number(data, "lon", required=True)
    accuracy = _number(data, "accuracy_m", required=True)
    ts = _number(data, "ts", required=False)
    assert lat is not None and lon is not None and accuracy is not None
    validate_lat_lon(lat, lon)
    if accuracy <= 0 or accuracy > ACCURACY_MAX_M:
        raise BadRequest(
            f"accuracy_m must be > 0 and at most {ACCURACY_MAX_M:g}",
            detail={"field": "accuracy_m", "value": accuracy},
        )
    if ts is None:
        ts = now
    if ts > now + FUTURE_SKEW_S:
        raise BadRequest(
            f"ts is {ts - now:.0f} s in the future (at most {FUTURE_SKEW_S:g} s of clock skew)",
            detail={"field": "ts", "value": ts},
        )
    if ts < now - MAX_FIX_AGE_S:
        raise BadRequest(
            f"ts is more than {MAX_FIX_AGE_S / 86400:g} days old",
            detail={"field": "ts", "value": ts},
        )
    speed = _number(data, "speed_mps", required=False)
    if speed is not None:
        _in_range("speed_mps", speed, 0.0, SPEED_MAX_MPS)
    heading = _number(data, "heading_deg", required=False)
    if heading is not None:
        _in_range("heading_deg", heading, HEADING_MIN_DEG, HEADING_MAX_DEG, high_open=True)
    battery_raw = _number(data, "battery_pct", required=False)
    battery: int | None = None
    if battery_raw is not None:
        _in_range("battery_pct", battery_raw, BATTERY_MIN_PCT, BATTERY_MAX_PCT)
        battery = round(battery_raw)
    return Fix(lat, lon, accuracy, ts, speed, heading, battery)


class FixLimiter:
    """Each member's fix budget: ``FIX_RATE_PER_S`` sustained, ``FIX_BURST`` at once.

    On a ``groups.limiter.RedisLimiter`` the budget is one across all nodes
    (a member cannot double it by sending to two); alone, this process's.
    """

    def __init__(self, limiter: Limiter | None = None) -> None:
        self.limiter = limiter or LocalLimiter(FIX_RATE_PER_S, FIX_BURST)

    async def check(self, member: int | str, now: float) -> None:
        """Spend one fix of ``member``'s; ``RateLimited`` (with a retry hint) if none is left."""
        retry_s = await self.limiter.take(str(member), now)
        if retry_s > 0.0:
            raise RateLimited(
                f"too many location updates: at most {self.limiter.rate_per_s:g}/s "
                f"(burst {self.limiter.burst})",
                detail={"retry_after_s": round(retry_s, 3)},
            )
