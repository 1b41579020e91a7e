"""REST: music uploads and the server's music folder.

An upload is checked to decode as audio before it is kept (in the database,
so a room on any node can play it: ``signaling.music_uploads``); its id is
then a valid ``source`` for ``{"type": "music", "action": "play"}``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from common.errors import BadRequest
from sfu import music
from signaling.deps import State, UserId

router = APIRouter(prefix="/api/music", tags=["music"])


@router.post("/uploads", status_code=201)
async def upload(request: Request, user_id: UserId, state: State) -> dict[str, object]:
    """Upload one audio file as the raw request body; name it with ``?filename=``.

    Raw bodies rather than multipart keep the size check simple: the body size
    middleware refuses anything over ``DISCO_MAX_UPLOAD_BYTES`` up front.
    """
    filename = request.query_params.get("filename", "upload")
    if len(filename) > music.MAX_SOURCE_NAME_CHARS:
        raise BadRequest("filename too long")
    data = await request.body()
    source_id = await state.music_uploads.save(user_id, filename, data, state.clock())
    return {"id": source_id, "source": source_id, "bytes": len(data)}


@router.get("")
async def library(_user_id: UserId, state: State) -> dict[str, object]:
    """The files in the server's music folder, usable as ``source`` names."""
    folder = state.settings.music_dir
    if folder is None or not folder.is_dir():
        return {"files": []}
    names = await asyncio.to_thread(
        lambda: sorted(
            p.name for p in folder.iterdir()
            if p.is_file() and not p.is_symlink() and p.suffix.lower() in music.AUDIO_EXTENSIONS
        )
    )
    return {"files": names}
