"""The PMTiles header parser and the map config, against files the pmtiles package writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import BadRequest
from common.settings import Settings
from signaling.basemap import (
    PMTILES_HEADER_BYTES,
    PMTILES_URL,
    map_config,
    parse_header,
    read_pmtiles_info,
)
from tests.map_support import write_raster_pmtiles


@pytest.fixture
def pmtiles_file(tmp_path: Path) -> Path:
    return write_raster_pmtiles(tmp_path / "region.pmtiles", max_zoom=3,
                                center=(7.835, 46.558))


def test_reads_what_the_pmtiles_writer_wrote(pmtiles_file: Path) -> None:
    info = read_pmtiles_info(pmtiles_file)
    assert info.tile_type == "png"
    assert (info.min_zoom, info.max_zoom) == (0, 3)
    assert info.bounds == (-180.0, -85.0, 180.0, 85.0)
    assert info.center == pytest.approx((7.835, 46.558, 1))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b[:50], "the header alone is 127"),
    (lambda b: b"PMTilez" + b[7:], "does not start with 'PMTiles'"),
    (lambda b: b[:7] + b"\x02" + b[8:], "version 2 is not supported"),
    (lambda b: b[:99] + b"\x00" + b[100:], "tile type 0"),
    (lambda b: b[:99] + b"\x09" + b[100:], "tile type 9"),
    (lambda b: b[:100] + b"\x05\x02" + b[102:], "min 5 > max 2"),
])
def test_refuses_what_is_not_a_usable_pmtiles_header(
    pmtiles_file: Path, mutate: object, message: str
) -> None:
    head = pmtiles_file.read_bytes()[:PMTILES_HEADER_BYTES]
    with pytest.raises(BadRequest, match=message):
        parse_header(mutate(head))  # type: ignore[operator]


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="cannot read"):
        read_pmtiles_info(tmp_path / "missing.pmtiles")


def test_map_config_for_each_kind_of_basemap(pmtiles_file: Path) -> None:
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert map_config(plain, None) == {"style_url": None, "pmtiles": None, "attribution": ""}
    styled = plain.model_copy(update={"map_style_url": "https://tiles.example/style.json"})
    assert map_config(styled, None)["style_url"] == "https://tiles.example/style.json"
    local = plain.model_copy(update={"map_attribution": "© test"})
    body = map_config(local, read_pmtiles_info(pmtiles_file))
    assert body["attribution"] == "© test"
    assert body["pmtiles"] == {
        "url": PMTILES_URL, "tile_type": "png", "raster": True, "min_zoom": 0, "max_zoom": 3,
        "bounds": [-180.0, -85.0, 180.0, 85.0], "center": pytest.approx([7.835, 46.558, 1]),
    }
