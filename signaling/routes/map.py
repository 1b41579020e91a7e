"""REST: the web map's basemap configuration, and the local ``.pmtiles`` file.

``GET /api/map`` says what to draw under the members (a style URL, the local
PMTiles file's tile type and extent, or nothing). ``GET /map/basemap.pmtiles``
serves ``DISCO_MAP_PMTILES_FILE`` with HTTP range requests (Starlette's
``FileResponse``: ``Accept-Ranges``, 206 partial content, 416 out of range,
``If-Range`` by ETag). Both are public: a basemap is no secret, and the map
library fetches tiles without the page's bearer token.

The file's header is read once when the app is built (a bad file stops the
server with a plain message); replace the file, then restart.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from common.errors import DiscoError, NotFound
from common.settings import Settings
from signaling.basemap import PMTILES_URL, PmtilesInfo, map_config, read_pmtiles_info

PMTILES_CACHE_CONTROL = "public, max-age=3600"


def make_router(settings: Settings) -> APIRouter:
    """The map routes for these settings (raises SystemExit on an unusable .pmtiles)."""
    router = APIRouter(tags=["map"])
    path = settings.map_pmtiles_file
    info: PmtilesInfo | None = None
    if path is not None:
        try:
            info = read_pmtiles_info(path)
        except DiscoError as exc:
            raise SystemExit(f"refusing to start: DISCO_MAP_PMTILES_FILE: {exc.message}") from exc
    config = map_config(settings, info)

    @router.get("/api/map")
    async def get_map() -> dict[str, Any]:
        return config

    @router.get(PMTILES_URL, include_in_schema=False)
    async def get_pmtiles() -> FileResponse:
        if path is None:
            raise NotFound("no basemap file is configured (DISCO_MAP_PMTILES_FILE)")
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"Cache-Control": PMTILES_CACHE_CONTROL})

    return router
