"""Great-circle geometry on a spherical Earth: distances, offsets, unit vectors.

Why a sphere and not WGS-84: every distance Disco decides on is at most a few
kilometres (voice ranges, places), where the spherical error (< 0.5 %) is far
below GPS accuracy, and the spherical formulas are cheap enough to run on every
location update. ``chord2`` is the index's fast form of the same distance: the
haversine term equals a quarter of the squared chord between unit vectors, so
comparing squared chords gives exactly the haversine answer without trig per
pair (``chord2_for_distance`` turns a distance threshold into a chord one).
"""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
METRES_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    """The point as a vector on the unit sphere (x towards 0°N 0°E, z to the north pole)."""
    phi, lmb = math.radians(lat), math.radians(lon)
    cos_phi = math.cos(phi)
    return (cos_phi * math.cos(lmb), cos_phi * math.sin(lmb), math.sin(phi))


def chord2_for_distance(distance_m: float) -> float:
    """Squared unit-sphere chord for a great-circle distance (monotonic up to half the globe)."""
    return (2.0 * math.sin(min(distance_m / EARTH_RADIUS_M, math.pi) / 2.0)) ** 2


def distance_for_chord2(chord2: float) -> float:
    """Inverse of ``chord2_for_distance``: metres for a squared unit-sphere chord."""
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(max(chord2, 0.0)) / 2.0))


def destination(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point ``distance_m`` from (lat, lon) along an initial bearing (degrees from north)."""
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    theta = math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * sin_phi2,
    )
    lon2 = (math.degrees(lmb2) + 540.0) % 360.0 - 180.0
    return math.degrees(phi2), lon2
