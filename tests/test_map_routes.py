"""GET /api/map and the local .pmtiles basemap served with HTTP range requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import Settings
from signaling.app import create_app
from signaling.basemap import PMTILES_URL, parse_header
from tests.map_support import write_raster_pmtiles
from tests.server_helpers import live_server


async def test_pmtiles_file_is_served_with_range_requests(
    settings: Settings, tmp_path: Path
) -> None:
    path = write_raster_pmtiles(tmp_path / "region.pmtiles", max_zoom=3)
    data = path.read_bytes()
    assert len(data) > 16384  # so that the first read is a true part
    async with live_server(settings.model_copy(update={"map_pmtiles_file": path})) as server:
        config = (await server.http.get("/api/map")).json()
        assert config["pmtiles"]["url"] == PMTILES_URL and config["pmtiles"]["raster"]

        # What the pmtiles JS library does first: the header and root directory.
        head = await server.http.get(PMTILES_URL, headers={"Range": "bytes=0-16383"})
        assert head.status_code == 206
        assert head.headers["content-range"] == f"bytes 0-16383/{len(data)}"
        assert head.content == data[:16384]
        assert "content-encoding" not in head.headers  # never gzipped: offsets stay exact
        js = await server.http.get("/app/app.js", headers={"Accept-Encoding": "gzip"})
        assert js.headers["content-encoding"] == "gzip"  # the client itself is
        assert parse_header(head.content).tile_type == "png"

        # A tile somewhere in the middle, and the last bytes.
        middle = await server.http.get(PMTILES_URL, headers={"Range": "bytes=5000-5099"})
        assert middle.status_code == 206 and middle.content == data[5000:5100]
        tail = await server.http.get(PMTILES_URL, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]

        # If-Range with the current ETag keeps the range; a stale one gets the whole file.
        etag = head.headers["etag"]
        kept = await server.http.get(PMTILES_URL, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert kept.status_code == 206 and len(kept.content) == 10
        stale = await server.http.get(PMTILES_URL,
                                      headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == data

        # Past the end: 416 with the size, as RFC 9110 says.
        beyond = await server.http.get(PMTILES_URL,
                                       headers={"Range": f"bytes={len(data) + 10}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(data)}"

        whole = await server.http.get(PMTILES_URL)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"


async def test_without_a_basemap_the_map_is_plain(settings: Settings) -> None:
    async with live_server(settings) as server:
        assert (await server.http.get("/api/map")).json() == {
            "style_url": None, "pmtiles": None, "attribution": ""}
        missing = await server.http.get(PMTILES_URL)
        assert missing.status_code == 404 and "DISCO_MAP_PMTILES_FILE" in missing.json()["message"]


def test_a_file_that_is_not_pmtiles_stops_the_server(settings: Settings, tmp_path: Path) -> None:
    bogus = tmp_path / "map.pmtiles"
    bogus.write_bytes(b"<html>not a map</html>" * 10)
    with pytest.raises(SystemExit, match="DISCO_MAP_PMTILES_FILE: not a PMTiles file"):
        create_app(settings.model_copy(update={"map_pmtiles_file": bogus}))
