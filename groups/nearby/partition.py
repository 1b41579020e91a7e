"""Partitions of the world for nearby voice across nodes. Pure (no I/O, no clock).

A partition is an H3 cell at ``PARTITION_RESOLUTION`` (res 5: cells of
~250 km², edges ~9 km). Each guest belongs to the partition that holds its
fix (``partition_of``); a node announces its guests' positions on their
partitions' topics and listens to every partition *near* one of its own guests
(``partitions_near``: the home cell and each neighbour whose boundary lies
within ``REACH_M`` of the guest). ``REACH_M`` is the largest hearing radius
plus a margin, so anyone a guest could hear lives in a partition that guest's
node listens to: a partition line is never audible.

Why subscribe-by-reach rather than mirror-on-announce: the announcer needs no
knowledge of who listens, and a guest walking along a line never changes
anything a client sees (its node only listens to one more or one less topic).
"""

from __future__ import annotations

import math
from functools import lru_cache

from h3.api import basic_str as h3

from groups.geo import EARTH_RADIUS_M
from protocol.limits import RADIUS_MAX_M

PARTITION_RESOLUTION = 5
"""H3 resolution of a partition: res 5 cells average ~253 km², edge ~8.5 km."""
REACH_MARGIN_M = 500.0
"""Slack beyond the largest radius (metres): flat-projection error, a fix in flight."""
REACH_M = RADIUS_MAX_M + REACH_MARGIN_M
"""A guest's node listens to every partition whose boundary is within this many metres."""
TOPIC_PREFIX = "nearby:"


def partition_of(lat: float, lon: float, resolution: int = PARTITION_RESOLUTION) -> str:
    """The partition (an H3 cell, as hex text) that holds the point."""
    return str(h3.latlng_to_cell(lat, lon, resolution))


def topic(partition: str) -> str:
    """The bus topic where positions in ``partition`` are announced."""
    return TOPIC_PREFIX + partition


def distance_to_cell_m(lat: float, lon: float, cell: str) -> float:
    """Metres from the point to the nearest edge of ``cell`` (0 inside it).

    Edges are measured in a flat projection around the point (equirectangular):
    within the few kilometres that matter here its error is far below
    ``REACH_MARGIN_M``.
    """
    if h3.latlng_to_cell(lat, lon, h3.get_resolution(cell)) == cell:
        return 0.0
    m_per_rad = EARTH_RADIUS_M
    cos_lat = math.cos(math.radians(lat))

    def flat(vlat: float, vlon: float) -> tuple[float, float]:
        dlon = (vlon - lon + 540.0) % 360.0 - 180.0  # across the antimeridian too
        return (math.radians(dlon) * cos_lat * m_per_rad, math.radians(vlat - lat) * m_per_rad)

    ring = [flat(vlat, vlon) for vlat, vlon in _boundary(cell)]
    return min(_point_segment_m(ring[i], ring[(i + 1) % len(ring)]) for i in range(len(ring)))


def partitions_near(lat: float, lon: float, reach_m: float = REACH_M,
                    resolution: int = PARTITION_RESOLUTION) -> frozenset[str]:
    """The home partition and every neighbour whose boundary is within ``reach_m``.

    ``reach_m`` must stay under a cell's short diameter (~15 km at res 5), so
    that the first ring of neighbours is enough; larger reaches are refused.
    """
    if not 0.0 <= reach_m <= _max_reach_m(resolution):
        raise ValueError(f"reach {reach_m} m is beyond the first ring at resolution {resolution}")
    home = h3.latlng_to_cell(lat, lon, resolution)
    return frozenset({home} | {cell for cell in h3.grid_disk(home, 1)
                               if cell != home and distance_to_cell_m(lat, lon, cell) <= reach_m})


@lru_cache(maxsize=4096)
def _boundary(cell: str) -> tuple[tuple[float, float], ...]:
    return tuple(h3.cell_to_boundary(cell))


def _max_reach_m(resolution: int) -> float:
    """The largest reach the first ring covers: cells of the second ring lie at least a
    cell's width (~1.7 edges) from any point of the home cell; one edge leaves slack for
    H3's distortion."""
    return h3.average_hexagon_edge_length(resolution, unit="m")


def _point_segment_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from the origin to the segment a-b (flat metres)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0.0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)
