"""Push tables: device tokens per user, and per-user muted categories.

A token is unique across users: when a phone changes hands (or accounts), the
newest registration wins. Created by migration 0003, never ``create_all``.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class PushDevice(SQLModel, table=True):
    __tablename__ = "push_devices"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    platform: str = Field(max_length=16)  # "ios" | "android"
    token: str = Field(max_length=512, unique=True)
    created_at: float
    last_seen_at: float


class PushSettings(SQLModel, table=True):
    __tablename__ = "push_settings"

    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    muted: str = Field(default="", max_length=255)  # comma-separated categories
    updated_at: float
