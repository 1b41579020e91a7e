"""Accounts people can leave: delete everything that is a user's, or export it.

``delete_account`` runs in the caller's transaction, in an order that keeps
every foreign key valid on SQLite and PostgreSQL:

1. Each group the user owns passes to its longest-standing admin, else its
   longest-standing member (earliest ``joined_at``, then lowest id); a group
   with no one else in it is deleted (with its places, invites and events).
2. Places the user made are deleted, in every group (a place is often where
   its maker lives: "home"); group events that named one keep its name and
   lose the link. Invites the user made are deleted; invites they used
   forget them.
3. Their location history, last position, sharing choices, place states,
   group events (SOS, enter/leave), push devices and settings, uploaded music,
   memberships, and the account row go. (The subscription row goes by the database's
   ``ON DELETE CASCADE``; billing cancels the Stripe subscription first, at
   the edge.)

User ids are never reused (migration 0004), so nothing that still names the
id can ever point at someone else.

``export_account`` returns the same data as JSON: profile, groups and roles,
location history as a GeoJSON FeatureCollection of Points (OwnTracks-style
``[lon, lat]``), last position, sharing choices, places they made, their
events, push devices (token tails only) and muted categories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, update
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import NotFound
from groups.location import models as location
from groups.location.store import event_json, place_json
from groups.models import Group, Invite, Membership, Role, User
from groups.push.models import PushDevice, PushSettings
from groups.uploads import MusicUpload

TOKEN_TAIL_CHARS = 6


@dataclass
class Erasure:
    """What deleting an account changed, for the bus announcements that follow."""

    user_id: int
    left_groups: list[int] = field(default_factory=list)  # groups that live on without them
    new_owners: dict[int, int] = field(default_factory=dict)  # group -> its new owner
    deleted_groups: list[int] = field(default_factory=list)  # owned and otherwise empty
    location_points: int = 0


async def successor(session: AsyncSession, group_id: int, leaving: int) -> Membership | None:
    """Who takes over ``group_id``: the longest-standing admin, else member."""
    rows = await session.exec(
        select(Membership)
        .where(Membership.group_id == group_id, Membership.user_id != leaving)
        .order_by(case((col(Membership.role) == Role.admin.value, 0), else_=1),
                  col(Membership.joined_at), col(Membership.user_id))
        .limit(1)
    )
    return rows.first()


async def delete_account(session: AsyncSession, user_id: int) -> Erasure:
    """Delete the user and everything that is theirs (see the module docstring)."""
    if await session.get(User, user_id) is None:
        raise NotFound("this account no longer exists")
    erasure = Erasure(user_id)
    memberships = (await session.exec(
        select(Membership).where(Membership.user_id == user_id))).all()
    for membership in memberships:
        group = await session.get(Group, membership.group_id)
        if group is None or group.id is None:
            continue
        if group.owner_id != user_id:
            erasure.left_groups.append(group.id)
            continue
        heir = await successor(session, group.id, user_id)
        if heir is None:
            erasure.deleted_groups.append(group.id)
            await session.exec(delete(Group).where(col(Group.id) == group.id))  # type: ignore[call-overload]
            continue
        heir.role = Role.owner.value
        group.owner_id = heir.user_id
        session.add_all([heir, group])
        erasure.new_owners[group.id] = heir.user_id
        erasure.left_groups.append(group.id)
    await session.flush()
    # Someone else's group the user owns without being a member cannot exist
    # (owners are members), but a leftover row must not block the delete.
    orphans = (await session.exec(select(Group).where(Group.owner_id == user_id))).all()
    for group in orphans:
        assert group.id is not None
        erasure.deleted_groups.append(group.id)
        await session.exec(delete(Group).where(col(Group.id) == group.id))  # type: ignore[call-overload]

    erasure.location_points = len((await session.exec(
        select(location.LocationPoint.id).where(location.LocationPoint.user_id == user_id))).all())
    statements: list[Any] = [
        delete(location.Place).where(col(location.Place.created_by) == user_id),
        delete(Invite).where(col(Invite.created_by) == user_id),
        update(Invite).where(col(Invite.used_by) == user_id).values(used_by=None),
        delete(location.LocationPoint).where(col(location.LocationPoint.user_id) == user_id),
        delete(location.LastLocation).where(col(location.LastLocation.user_id) == user_id),
        delete(location.LocationSharing).where(col(location.LocationSharing.user_id) == user_id),
        delete(location.PlaceMemberState).where(col(location.PlaceMemberState.user_id) == user_id),
        delete(location.GroupEvent).where(col(location.GroupEvent.user_id) == user_id),
        delete(PushDevice).where(col(PushDevice.user_id) == user_id),
        delete(PushSettings).where(col(PushSettings.user_id) == user_id),
        delete(MusicUpload).where(col(MusicUpload.uploaded_by) == user_id),
        delete(Membership).where(col(Membership.user_id) == user_id),
        delete(User).where(col(User.id) == user_id),
    ]
    for statement in statements:
        await session.exec(statement)
    await session.flush()
    session.expunge_all()  # loaded rows of deleted things must not be written back
    return erasure


def _point_feature(point: location.LocationPoint) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [point.lon, point.lat]},
        "properties": {"ts": point.ts, "accuracy_m": point.accuracy_m,
                       "speed_mps": point.speed_mps, "heading_deg": point.heading_deg,
                       "battery_pct": point.battery_pct, "received_at": point.received_at},
    }


async def export_account(session: AsyncSession, user_id: int) -> dict[str, Any]:
    """Everything stored about the user, as JSON (the edge adds billing)."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("this account no longer exists")
    groups = (await session.exec(
        select(Group, Membership)
        .join(Membership, col(Membership.group_id) == col(Group.id))
        .where(Membership.user_id == user_id).order_by(col(Group.id)))).all()
    points = (await session.exec(
        select(location.LocationPoint).where(location.LocationPoint.user_id == user_id)
        .order_by(col(location.LocationPoint.ts), col(location.LocationPoint.id)))).all()
    last = await session.get(location.LastLocation, user_id)
    sharing = (await session.exec(
        select(location.LocationSharing).where(location.LocationSharing.user_id == user_id)
        .order_by(col(location.LocationSharing.group_id)))).all()
    places = (await session.exec(
        select(location.Place).where(location.Place.created_by == user_id)
        .order_by(col(location.Place.id)))).all()
    events = (await session.exec(
        select(location.GroupEvent).where(location.GroupEvent.user_id == user_id)
        .order_by(col(location.GroupEvent.ts), col(location.GroupEvent.id)))).all()
    devices = (await session.exec(
        select(PushDevice).where(PushDevice.user_id == user_id)
        .order_by(col(PushDevice.id)))).all()
    push_settings = await session.get(PushSettings, user_id)
    last_json = None
    if last is not None:
        last_json = {"type": "Feature",
                     "geometry": {"type": "Point", "coordinates": [last.lon, last.lat]},
                     "properties": {"ts": last.ts, "accuracy_m": last.accuracy_m,
                                    "speed_mps": last.speed_mps,
                                    "heading_deg": last.heading_deg,
                                    "battery_pct": last.battery_pct,
                                    "received_at": last.received_at}}
    return {
        "profile": {"id": user.id, "username": user.username,
                    "display_name": user.display_name, "created_at": user.created_at},
        "groups": [{"id": g.id, "name": g.name, "role": m.role, "joined_at": m.joined_at,
                    "owner_id": g.owner_id} for g, m in groups],
        "location": {
            "history": {"type": "FeatureCollection",
                        "features": [_point_feature(p) for p in points]},
            "last": last_json,
            "sharing": [{"group_id": s.group_id, "paused": s.paused, "precision": s.precision,
                         "updated_at": s.updated_at} for s in sharing],
        },
        "places": [place_json(p) for p in places],
        "events": [event_json(e) for e in events],
        "push": {
            "devices": [{"platform": d.platform, "token_tail": d.token[-TOKEN_TAIL_CHARS:],
                         "created_at": d.created_at, "last_seen_at": d.last_seen_at}
                        for d in devices],
            "muted": sorted(filter(None, (push_settings.muted if push_settings else "")
                                   .split(","))),
        },
    }
