"""GPX replay: where a recorded track says we are, ``t`` seconds into the replay (pure).

For demos and tests the client "moves" along a GPX track. Points with
timestamps are replayed at their recorded pace (times ``speed``); points
without (a drawn route) are spaced ``DEFAULT_STEP_S`` apart. Between points the
position is interpolated linearly, which is plenty at walking or riding scale.
After the last point the position stays there.
"""

from __future__ import annotations

import bisect
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from clients.desktop.errors import BadInputFile

DEFAULT_STEP_S = 5.0
EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Point:
    t_s: float
    """Seconds since the track's first point."""
    lat: float
    lon: float


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse(text: str, source: str = "GPX") -> list[Point]:
    """Track points (``trkpt``), else route points (``rtept``), else waypoints."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadInputFile(f"{source} is not valid GPX/XML: {exc}") from None
    by_kind: dict[str, list[tuple[float, float, float | None]]] = {
        "trkpt": [], "rtept": [], "wpt": []
    }
    for el in root.iter():
        kind = _local(el.tag)
        if kind not in by_kind:
            continue
        try:
            lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
        except (KeyError, ValueError):
            raise BadInputFile(f"{source}: a {kind} without a numeric lat/lon") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not math.isfinite(lat + lon):
            raise BadInputFile(f"{source}: {kind} out of range: {lat}, {lon}")
        when = next((_time(c.text) for c in el if _local(c.tag) == "time"), None)
        by_kind[kind].append((lat, lon, when))
    raw = by_kind["trkpt"] or by_kind["rtept"] or by_kind["wpt"]
    if not raw:
        raise BadInputFile(f"{source} holds no track, route or waypoints")
    timed = all(w is not None for _, _, w in raw)
    points: list[Point] = []
    for n, (lat, lon, when) in enumerate(raw):
        if timed:
            assert when is not None and raw[0][2] is not None
            t = max(when - raw[0][2], points[-1].t_s if points else 0.0)
        else:
            t = n * DEFAULT_STEP_S
        points.append(Point(t, lat, lon))
    return points


def load(path: Path) -> list[Point]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputFile(f"cannot read GPX file {path}: {exc}") from None
    return parse(text, str(path))


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass
class Replay:
    """Position ``elapsed_s`` into the replay, and the speed there."""

    points: list[Point]
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a replay needs at least one point")
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        self._times = [p.t_s for p in self.points]

    @property
    def duration_s(self) -> float:
        return self.points[-1].t_s / self.speed

    def position(self, elapsed_s: float) -> tuple[float, float, float | None]:
        """(lat, lon, speed in m/s or None) at ``elapsed_s`` of wall time."""
        t = max(0.0, elapsed_s) * self.speed
        i = bisect.bisect_right(self._times, t)
        if i <= 0:
            p = self.points[0]
            return p.lat, p.lon, None
        if i >= len(self.points):
            p = self.points[-1]
            return p.lat, p.lon, 0.0
        a, b = self.points[i - 1], self.points[i]
        span = b.t_s - a.t_s
        f = (t - a.t_s) / span if span > 0 else 1.0
        mps = distance_m(a, b) / span * self.speed if span > 0 else None
        return a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f, mps
