"""Small PMTiles basemaps made by the tests themselves (with the ``pmtiles`` package)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

TILE_PX = 256
E7 = 10_000_000


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour RGB PNG, encoded with the standard library only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then the pixels
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


def write_raster_pmtiles(path: Path, max_zoom: int = 2,
                         center: tuple[float, float] = (7.835, 46.558)) -> Path:
    """A world raster basemap, zooms 0..max_zoom, each tile a solid colour of its own."""
    with path.open("wb") as f:
        writer = Writer(f)
        tiles = []
        for z in range(max_zoom + 1):
            for x in range(2 ** z):
                for y in range(2 ** z):
                    colour = (40 + 60 * z, 80 + (x * 37) % 150, 90 + (y * 53) % 150)
                    tiles.append((zxy_to_tileid(z, x, y), png(TILE_PX, TILE_PX, colour)))
        for tile_id, data in sorted(tiles):
            writer.write_tile(tile_id, data)
        writer.finalize({
            "tile_type": TileType.PNG,
            "tile_compression": Compression.NONE,
            "min_zoom": 0, "max_zoom": max_zoom,
            "min_lon_e7": -180 * E7, "min_lat_e7": -85 * E7,
            "max_lon_e7": 180 * E7, "max_lat_e7": 85 * E7,
            "center_zoom": 1,
            "center_lon_e7": round(center[0] * E7), "center_lat_e7": round(center[1] * E7),
        }, {"attribution": "Disco test tiles", "name": "test"})
    return path
