"""Uploaded music in the database: the bytes every node can read.

A row per distinct file (the source id is derived from the content, so the
same file uploaded twice is one row, kept by its first uploader); deleting
the uploader's account deletes their uploads. The file is checked to decode
before it gets here (``sfu.music.save_upload``); nodes copy it into their
upload folder when a room they host plays it.
"""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


class MusicUpload(SQLModel, table=True):
    __tablename__ = "music_uploads"

    source_id: str = Field(primary_key=True, max_length=32)
    ext: str = Field(max_length=8)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    uploaded_by: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    created_at: float


async def put(session: AsyncSession, source_id: str, ext: str, data: bytes, user_id: int,
              now: float) -> bool:
    """Keep ``data`` under ``source_id`` unless it is there already; True if added."""
    if await session.get(MusicUpload, source_id) is not None:
        return False
    session.add(MusicUpload(source_id=source_id, ext=ext, size=len(data), data=data,
                            uploaded_by=user_id, created_at=now))
    await session.flush()
    return True


async def get(session: AsyncSession, source_id: str) -> MusicUpload | None:
    return await session.get(MusicUpload, source_id)
