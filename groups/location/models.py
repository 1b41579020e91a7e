"""Tables for location: history, last known position, sharing, places, events.

Times are unix seconds (float, UTC), as in ``groups.models``. History is a
plain table with a (user_id, ts) index (TimescaleDB is not packaged here;
a B-tree on time is what the history and retention queries need) and a ts
index for retention. A fix belongs to the user, not to a group: each group
sees it through the member's sharing choice for that group. The schema is
created by ``common/migrations/versions/0002_location.py``.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class Precision(StrEnum):
    precise = "precise"
    approximate = "approximate"


class EventKind(StrEnum):
    enter = "enter"
    leave = "leave"
    sos = "sos"


class FixColumns(SQLModel):
    """The columns of a stored fix, shared by history and the last known position."""

    lat: float
    lon: float
    accuracy_m: float
    speed_mps: float | None = None
    heading_deg: float | None = None
    battery_pct: int | None = None
    received_at: float


class LocationPoint(FixColumns, table=True):
    __tablename__ = "location_points"
    __table_args__ = (Index("ix_location_points_user_id_ts", "user_id", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    ts: float = Field(index=True)


class LastLocation(FixColumns, table=True):
    """The newest fix per user (by device time), kept so the live map is one cheap query."""

    __tablename__ = "last_locations"

    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    ts: float


class LocationSharing(SQLModel, table=True):
    """A member's choice per group; no row means sharing precisely, not paused."""

    __tablename__ = "location_sharing"

    group_id: int = Field(foreign_key="groups.id", primary_key=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    paused: bool = False
    precision: str = Field(default=Precision.precise, max_length=16)
    updated_at: float


class Place(SQLModel, table=True):
    __tablename__ = "places"

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    lat: float
    lon: float
    radius_m: float
    created_by: int = Field(foreign_key="users.id")
    created_at: float


class PlaceMemberState(SQLModel, table=True):
    """Inside/outside per (place, member), and the device time of the fix that decided it."""

    __tablename__ = "place_states"

    place_id: int = Field(foreign_key="places.id", primary_key=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    state: str = Field(max_length=16)
    last_ts: float


class GroupEvent(SQLModel, table=True):
    """enter/leave/sos, as members see them later (``GET /api/groups/{id}/events``)."""

    __tablename__ = "group_events"
    __table_args__ = (Index("ix_group_events_group_id_ts", "group_id", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)
    place_id: int | None = Field(default=None, foreign_key="places.id", ondelete="SET NULL")
    place_name: str | None = Field(default=None, max_length=64)
    lat: float | None = None
    lon: float | None = None
    ts: float
