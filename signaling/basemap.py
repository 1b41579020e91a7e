"""The web map's basemap: what the client should draw under members and places.

Three cases, from the settings: a MapLibre style URL (the operator's own tile
server), one local ``.pmtiles`` file that this server serves with HTTP range
requests (Protomaps PMTiles v3: a region's tiles in one file), or nothing (the
client draws on a plain background with a scale bar).

``parse_header`` is the sans-I/O part: the fixed 127-byte PMTiles v3 header in,
what the client needs to build a style out (tile type, zooms, bounds, centre).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import BadRequest
from common.settings import Settings

PMTILES_MAGIC = b"PMTiles"
PMTILES_VERSION = 3
PMTILES_HEADER_BYTES = 127
PMTILES_URL = "/map/basemap.pmtiles"
"""Where the server serves ``DISCO_MAP_PMTILES_FILE`` (range requests)."""
E7 = 10_000_000  # PMTiles stores degrees as int32 * 1e7

TILE_TYPES = {0: "unknown", 1: "mvt", 2: "png", 3: "jpeg", 4: "webp", 5: "avif"}
RASTER_TILE_TYPES = frozenset({"png", "jpeg", "webp", "avif"})


@dataclass(frozen=True)
class PmtilesInfo:
    tile_type: str
    """``mvt`` (vector) or a raster image format (``png``, ``jpeg``, ``webp``, ``avif``)."""
    min_zoom: int
    max_zoom: int
    bounds: tuple[float, float, float, float]
    """min_lon, min_lat, max_lon, max_lat in degrees."""
    center: tuple[float, float, int]
    """lon, lat in degrees, zoom."""


def _u8(data: bytes, at: int) -> int:
    return data[at]


def _i32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little", signed=True)


def parse_header(data: bytes) -> PmtilesInfo:
    """The header of a PMTiles v3 archive (its first 127 bytes or more)."""
    if len(data) < PMTILES_HEADER_BYTES:
        raise BadRequest(f"not a PMTiles file: {len(data)} bytes, the header alone is "
                         f"{PMTILES_HEADER_BYTES}")
    if data[:7] != PMTILES_MAGIC:
        raise BadRequest("not a PMTiles file: it does not start with 'PMTiles'")
    if data[7] != PMTILES_VERSION:
        raise BadRequest(f"PMTiles version {data[7]} is not supported (only {PMTILES_VERSION})")
    tile_type = TILE_TYPES.get(_u8(data, 99))
    if tile_type is None or tile_type == "unknown":
        raise BadRequest(f"PMTiles tile type {_u8(data, 99)} is not one a map can draw")
    min_zoom, max_zoom = _u8(data, 100), _u8(data, 101)
    if min_zoom > max_zoom:
        raise BadRequest(f"PMTiles zooms are inverted: min {min_zoom} > max {max_zoom}")
    bounds = (_i32(data, 102) / E7, _i32(data, 106) / E7, _i32(data, 110) / E7,
              _i32(data, 114) / E7)
    center = (_i32(data, 119) / E7, _i32(data, 123) / E7, _u8(data, 118))
    return PmtilesInfo(tile_type, min_zoom, max_zoom, bounds, center)


def read_pmtiles_info(path: Path) -> PmtilesInfo:
    """Read and check a ``.pmtiles`` file's header (raises BadRequest if it is not one)."""
    try:
        with path.open("rb") as f:
            head = f.read(PMTILES_HEADER_BYTES)
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_header(head)


def map_config(settings: Settings, pmtiles: PmtilesInfo | None) -> dict[str, Any]:
    """What ``GET /api/map`` returns: the client builds its MapLibre style from it."""
    body: dict[str, Any] = {
        "style_url": settings.map_style_url,
        "pmtiles": None,
        "attribution": settings.map_attribution,
    }
    if pmtiles is not None:
        body["pmtiles"] = {
            "url": PMTILES_URL,
            "tile_type": pmtiles.tile_type,
            "raster": pmtiles.tile_type in RASTER_TILE_TYPES,
            "min_zoom": pmtiles.min_zoom,
            "max_zoom": pmtiles.max_zoom,
            "bounds": list(pmtiles.bounds),
            "center": list(pmtiles.center),
        }
    return body
