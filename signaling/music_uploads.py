"""Uploaded music that every node can play.

An upload is checked to decode and kept in this node's upload folder
(``sfu.music.save_upload``), then stored in the database (``groups.uploads``),
which every node reads. A room hosted on another node that plays the upload
copies it into its own folder first (``ensure_local``). The database was
chosen over a shared folder: a deployment already has it, and nothing more
needs mounting on every machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.db import SessionFactory, session_scope
from groups import uploads
from sfu import music


class MusicUploads:
    def __init__(self, sessions: SessionFactory, upload_dir: Path, max_bytes: int) -> None:
        self.sessions = sessions
        self.upload_dir = upload_dir
        self.max_bytes = max_bytes

    async def save(self, user_id: int, filename: str, data: bytes, now: float) -> str:
        """Check and keep one upload; returns its source id (the same for the same bytes)."""
        source_id = await asyncio.to_thread(
            music.save_upload, self.upload_dir, filename, data, self.max_bytes
        )
        async with session_scope(self.sessions) as db:
            await uploads.put(db, source_id, music.upload_ext(filename), data, user_id, now)
        return source_id

    async def ensure_local(self, source: str | None) -> None:
        """Copy an upload from the database into this node's folder if it is not there.

        Sources that are not upload ids, and ids nobody uploaded, are left for
        ``sfu.music.resolve_source`` to judge (it answers ``not_found``).
        """
        if source is None or not music.UPLOAD_ID_RE.match(source):
            return
        if await asyncio.to_thread(music.has_upload, self.upload_dir, source):
            return
        async with self.sessions() as db:
            row = await uploads.get(db, source)
        if row is not None:
            await asyncio.to_thread(music.cache_upload, self.upload_dir, source, row.ext,
                                    bytes(row.data))
