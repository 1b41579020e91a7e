"""Location storage rules over an open DB session: fixes, sharing, history, places, events.

Functions take the acting user's id and raise ``common.errors`` exceptions;
the caller owns the transaction (as in ``groups.service``). Visibility is
decided here, once: a non-member gets ``NotFound``; a paused member shows as
``paused`` with no position; an approximate member's fixes are coarsened by
``groups.location.privacy`` before they leave this module. A member always sees their
own data precisely.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import BadRequest, LimitExceeded, NotFound
from groups.location.fixes import Fix, validate_lat_lon
from groups.location.geofence import Circle, PlaceState, Tracked, TransitionKind, step
from groups.location.models import (
    EventKind,
    GroupEvent,
    LastLocation,
    LocationPoint,
    LocationSharing,
    Place,
    PlaceMemberState,
    Precision,
)
from groups.location.privacy import approximate
from groups.models import Membership, Role
from groups.service import require_member

log = logging.getLogger(__name__)

DAY_S = 86_400.0
PLACE_RADIUS_MIN_M = 25.0
PLACE_RADIUS_MAX_M = 50_000.0
PLACE_NAME_MAX_CHARS = 64
PLACES_MAX_PER_GROUP = 100
HISTORY_MAX_POINTS = 10_000
HISTORY_MAX_SPAN_S = 31 * DAY_S
EVENTS_MAX = 500


@dataclass(frozen=True)
class Sharing:
    paused: bool = False
    precision: Precision = Precision.precise


def _fix_of(row: LastLocation | LocationPoint) -> Fix:
    return Fix(row.lat, row.lon, row.accuracy_m, row.ts, row.speed_mps, row.heading_deg,
               row.battery_pct)


def shown_fix(fix: Fix, sharing: Sharing, *, own: bool = False) -> Fix | None:
    """What others see of ``fix`` under ``sharing``: None when paused."""
    if own:
        return fix
    if sharing.paused:
        return None
    return approximate(fix) if sharing.precision is Precision.approximate else fix


# --- fixes ---------------------------------------------------------------


async def record_fix(session: AsyncSession, user_id: int, fix: Fix, now: float) -> LocationPoint:
    """Append to history and move the last known position forward (never backwards)."""
    point = LocationPoint(user_id=user_id, received_at=now, **fix.to_json())
    session.add(point)
    last = await session.get(LastLocation, user_id)
    if last is None:
        session.add(LastLocation(user_id=user_id, received_at=now, **fix.to_json()))
    elif fix.ts >= last.ts:
        last.ts, last.lat, last.lon, last.accuracy_m = fix.ts, fix.lat, fix.lon, fix.accuracy_m
        last.speed_mps, last.heading_deg = fix.speed_mps, fix.heading_deg
        last.battery_pct, last.received_at = fix.battery_pct, now
        session.add(last)
    await session.flush()
    return point


async def last_fix(session: AsyncSession, user_id: int) -> Fix | None:
    last = await session.get(LastLocation, user_id)
    return _fix_of(last) if last is not None else None


# --- sharing -------------------------------------------------------------


async def sharing_of(session: AsyncSession, group_id: int, user_id: int) -> Sharing:
    row = await session.get(LocationSharing, (group_id, user_id))
    if row is None:
        return Sharing()
    return Sharing(row.paused, Precision(row.precision))


async def set_sharing(
    session: AsyncSession, group_id: int, user_id: int, paused: bool, precision: str, now: float
) -> Sharing:
    """A member's own choice for one group."""
    await require_member(session, group_id, user_id)
    try:
        chosen = Precision(precision)
    except ValueError:
        raise BadRequest("precision must be 'precise' or 'approximate'",
                         detail={"field": "precision"}) from None
    row = await session.get(LocationSharing, (group_id, user_id))
    if row is None:
        row = LocationSharing(group_id=group_id, user_id=user_id, updated_at=now)
    row.paused, row.precision, row.updated_at = bool(paused), chosen.value, now
    session.add(row)
    await session.flush()
    return Sharing(row.paused, chosen)


async def sharing_by_group(session: AsyncSession, user_id: int) -> dict[int, Sharing]:
    """The user's groups -> their sharing choice there (for fan-out after a fix)."""
    rows = await session.exec(
        select(Membership.group_id, LocationSharing)
        .join(
            LocationSharing,
            (col(LocationSharing.group_id) == col(Membership.group_id))
            & (col(LocationSharing.user_id) == col(Membership.user_id)),
            isouter=True,
        )
        .where(Membership.user_id == user_id)
    )
    out = {}
    for group_id, row in rows.all():
        out[group_id] = Sharing() if row is None else Sharing(row.paused, Precision(row.precision))
    return out


async def group_locations(
    session: AsyncSession, group_id: int, viewer_id: int
) -> list[dict[str, Any]]:
    """Every member's last known position as the viewer may see it."""
    await require_member(session, group_id, viewer_id)
    rows = await session.exec(
        select(Membership.user_id, LastLocation, LocationSharing)
        .join(LastLocation, col(LastLocation.user_id) == col(Membership.user_id), isouter=True)
        .join(
            LocationSharing,
            (col(LocationSharing.group_id) == col(Membership.group_id))
            & (col(LocationSharing.user_id) == col(Membership.user_id)),
            isouter=True,
        )
        .where(Membership.group_id == group_id)
        .order_by(col(Membership.user_id))
    )
    out = []
    for user_id, last, share_row in rows.all():
        sharing = Sharing() if share_row is None else Sharing(
            share_row.paused, Precision(share_row.precision)
        )
        own = user_id == viewer_id
        entry: dict[str, Any] = {"user_id": user_id, "precision": sharing.precision.value}
        if sharing.paused and not own:
            entry.update(status="paused", location=None)
        elif last is None:
            entry.update(status="unknown", location=None)
        else:
            shown = shown_fix(_fix_of(last), sharing, own=own)
            entry.update(status="sharing", location=shown.to_json() if shown else None)
        out.append(entry)
    return out


# --- history -------------------------------------------------------------


async def history(
    session: AsyncSession, group_id: int, viewer_id: int, member_id: int,
    start: float, end: float, not_before: float | None = None,
) -> dict[str, Any]:
    """A member's track from ``start`` to ``end`` as a GeoJSON Feature (LineString + times).

    Like OwnTracks' recorder: coordinates are ``[lon, lat]``; the parallel
    ``timestamps`` and ``accuracy_m`` arrays are in ``properties``.
    ``not_before`` is the plan's history window (billing), if any.
    """
    for name, value in (("from", start), ("to", end)):
        if not math.isfinite(value):
            raise BadRequest(f"{name} must be a finite unix time", detail={"field": name})
    if end < start:
        raise BadRequest("'to' must not be before 'from'", detail={"field": "to"})
    if end - start > HISTORY_MAX_SPAN_S:
        raise BadRequest(f"at most {HISTORY_MAX_SPAN_S / DAY_S:g} days per request",
                         detail={"field": "to"})
    await require_member(session, group_id, viewer_id)
    if await session.get(Membership, (group_id, member_id)) is None:
        raise NotFound("no such member")
    own = member_id == viewer_id
    sharing = await sharing_of(session, group_id, member_id)
    properties: dict[str, Any] = {
        "user_id": member_id, "from": start, "to": end,
        "precision": Precision.precise.value if own else sharing.precision.value,
        "paused": sharing.paused and not own, "timestamps": [], "accuracy_m": [],
    }
    feature: dict[str, Any] = {
        "type": "Feature", "geometry": {"type": "LineString", "coordinates": []},
        "properties": properties,
    }
    if properties["paused"]:
        return feature
    lower = max(start, not_before) if not_before is not None else start
    rows = await session.exec(
        select(LocationPoint)
        .where(LocationPoint.user_id == member_id, col(LocationPoint.ts) >= lower,
               col(LocationPoint.ts) <= end)
        .order_by(col(LocationPoint.ts), col(LocationPoint.id))
        .limit(HISTORY_MAX_POINTS)
    )
    coords = feature["geometry"]["coordinates"]
    for point in rows.all():
        shown = shown_fix(_fix_of(point), sharing, own=own)
        assert shown is not None
        if coords and coords[-1] == [shown.lon, shown.lat]:
            continue  # approximate tracks collapse to the cells visited
        coords.append([shown.lon, shown.lat])
        properties["timestamps"].append(shown.ts)
        properties["accuracy_m"].append(shown.accuracy_m)
    properties["truncated"] = len(coords) >= HISTORY_MAX_POINTS
    return feature


async def apply_retention(
    session: AsyncSession, now: float, days: float,
    group_cutoffs: Mapping[int, float] | None = None,
) -> int:
    """Delete history and events older than the retention; returns points deleted.

    ``days`` is the server's setting. ``group_cutoffs`` (group id -> oldest
    timestamp to keep, e.g. ``billing.service.history_cutoffs``) overrides it
    per group; a member's points are kept as long as any of their groups
    keeps them (the most generous cutoff wins), since every group of theirs
    may show them.
    """
    default_cutoff = now - days * DAY_S
    overrides = dict(group_cutoffs or {})
    deleted = 0
    special: dict[int, float] = {}
    if overrides:
        rows = await session.exec(
            select(Membership.user_id, Membership.group_id).where(
                col(Membership.user_id).in_(
                    select(Membership.user_id).where(col(Membership.group_id).in_(list(overrides)))
                )
            )
        )
        for user_id, group_id in rows.all():
            cutoff = overrides.get(group_id, default_cutoff)
            special[user_id] = min(special.get(user_id, cutoff), cutoff)
    by_cutoff: dict[float, list[int]] = defaultdict(list)
    for user_id, cutoff in special.items():
        by_cutoff[cutoff].append(user_id)
    plain = delete(LocationPoint).where(col(LocationPoint.ts) < default_cutoff)
    if special:
        plain = plain.where(col(LocationPoint.user_id).not_in(list(special)))
    result = await session.exec(plain)  # type: ignore[call-overload]
    deleted += result.rowcount or 0
    for cutoff, users in by_cutoff.items():
        result = await session.exec(  # type: ignore[call-overload]
            delete(LocationPoint).where(
                col(LocationPoint.user_id).in_(users), col(LocationPoint.ts) < cutoff
            )
        )
        deleted += result.rowcount or 0
    events = delete(GroupEvent).where(col(GroupEvent.ts) < default_cutoff)
    if overrides:
        events = events.where(col(GroupEvent.group_id).not_in(list(overrides)))
    await session.exec(events)  # type: ignore[call-overload]
    for group_id, cutoff in overrides.items():
        await session.exec(  # type: ignore[call-overload]
            delete(GroupEvent).where(
                col(GroupEvent.group_id) == group_id, col(GroupEvent.ts) < cutoff
            )
        )
    log.info("retention: deleted %d location points older than %g days", deleted, days)
    return deleted


# --- places --------------------------------------------------------------


def validate_place(name: str, lat: float, lon: float, radius_m: float) -> str:
    """Clean place name, or BadRequest for a bad name, point or radius."""
    name = " ".join(str(name).split()) if isinstance(name, str) else ""
    if not name or len(name) > PLACE_NAME_MAX_CHARS or not name.isprintable():
        raise BadRequest(f"place name must be 1-{PLACE_NAME_MAX_CHARS} printable characters",
                         detail={"field": "name"})
    validate_lat_lon(lat, lon)
    if (isinstance(radius_m, bool) or not isinstance(radius_m, int | float)
            or not math.isfinite(radius_m)
            or not PLACE_RADIUS_MIN_M <= radius_m <= PLACE_RADIUS_MAX_M):
        raise BadRequest(
            f"radius_m must be between {PLACE_RADIUS_MIN_M:g} and {PLACE_RADIUS_MAX_M:g} m",
            detail={"field": "radius_m"},
        )
    return name


async def create_place(
    session: AsyncSession, group_id: int, actor_id: int, name: str, lat: float, lon: float,
    radius_m: float, now: float,
) -> Place:
    """Group admins define places; validation happens before anything is stored."""
    clean = validate_place(name, lat, lon, radius_m)
    await require_member(session, group_id, actor_id, at_least=Role.admin)
    if len(await list_places(session, group_id, actor_id)) >= PLACES_MAX_PER_GROUP:
        raise LimitExceeded(f"a group can have at most {PLACES_MAX_PER_GROUP} places",
                            detail={"limit": "places", "value": PLACES_MAX_PER_GROUP})
    place = Place(group_id=group_id, name=clean, lat=float(lat), lon=float(lon),
                  radius_m=float(radius_m), created_by=actor_id, created_at=now)
    session.add(place)
    await session.flush()
    return place


async def update_place(
    session: AsyncSession, group_id: int, actor_id: int, place_id: int, name: str, lat: float,
    lon: float, radius_m: float,
) -> Place:
    """Move, resize or rename a place (admins). A new centre or radius forgets who was
    inside: each member's next fix decides again, without an enter/leave for the edit."""
    clean = validate_place(name, lat, lon, radius_m)
    await require_member(session, group_id, actor_id, at_least=Role.admin)
    place = await session.get(Place, place_id)
    if place is None or place.group_id != group_id:
        raise NotFound("no such place")
    if (place.lat, place.lon, place.radius_m) != (float(lat), float(lon), float(radius_m)):
        await session.exec(  # type: ignore[call-overload]
            delete(PlaceMemberState).where(col(PlaceMemberState.place_id) == place_id)
        )
    place.name, place.lat, place.lon = clean, float(lat), float(lon)
    place.radius_m = float(radius_m)
    session.add(place)
    await session.flush()
    return place


async def list_places(session: AsyncSession, group_id: int, viewer_id: int) -> list[Place]:
    await require_member(session, group_id, viewer_id)
    rows = await session.exec(
        select(Place).where(Place.group_id == group_id).order_by(col(Place.id))
    )
    return list(rows.all())


async def delete_place(session: AsyncSession, group_id: int, actor_id: int, place_id: int) -> None:
    await require_member(session, group_id, actor_id, at_least=Role.admin)
    place = await session.get(Place, place_id)
    if place is None or place.group_id != group_id:
        raise NotFound("no such place")
    await session.exec(  # type: ignore[call-overload]
        delete(PlaceMemberState).where(col(PlaceMemberState.place_id) == place_id)
    )
    await session.delete(place)
    await session.flush()


def place_json(place: Place) -> dict[str, Any]:
    return {"id": place.id, "group_id": place.group_id, "name": place.name, "lat": place.lat,
            "lon": place.lon, "radius_m": place.radius_m, "created_by": place.created_by,
            "created_at": place.created_at}


# --- geofence evaluation and events -------------------------------------


def places_evaluated(sharing: Sharing) -> bool:
    """Whether a member's fixes run a group's geofences: only when sharing precisely.

    Paused: the group learns nothing of where the member is, so no place
    events either. Approximate: a place (25 m and up) is usually far smaller
    than the ~1 km cell the group sees, so "entered home" would say more than
    the map; the group gets no place events. Either way the member's state
    for those places is forgotten, so the first fix after they share
    precisely again sets it silently: nothing that happened meanwhile is
    announced late.
    """
    return not sharing.paused and sharing.precision is Precision.precise


async def evaluate_places(
    session: AsyncSession, user_id: int, fix: Fix, now: float,
    sharing: Mapping[int, Sharing] | None = None,
) -> list[GroupEvent]:
    """Advance the member's state for every place of every group they are in.

    Only in groups whose ``sharing`` (group id -> choice; read from the
    database when not given) lets places be evaluated (``places_evaluated``);
    elsewhere the member's place states are dropped. Returns the enter/leave
    events (already added to the session).
    """
    if sharing is None:
        sharing = await sharing_by_group(session, user_id)
    rows = await session.exec(
        select(Place, PlaceMemberState)
        .join(Membership, col(Membership.group_id) == col(Place.group_id))
        .join(
            PlaceMemberState,
            (col(PlaceMemberState.place_id) == col(Place.id))
            & (col(PlaceMemberState.user_id) == user_id),
            isouter=True,
        )
        .where(Membership.user_id == user_id)
        .order_by(col(Place.id))
    )
    events = []
    for place, row in rows.all():
        assert place.id is not None
        if not places_evaluated(sharing.get(place.group_id, Sharing())):
            if row is not None:
                await session.delete(row)
            continue
        tracked = Tracked() if row is None else Tracked(PlaceState(row.state), row.last_ts)
        new, transition = step(
            Circle(place.lat, place.lon, place.radius_m), tracked,
            fix.lat, fix.lon, fix.accuracy_m, fix.ts,
        )
        if new != tracked:
            if row is None:
                row = PlaceMemberState(place_id=place.id, user_id=user_id,
                                       state=new.state.value, last_ts=new.last_ts)
            row.state, row.last_ts = new.state.value, new.last_ts
            session.add(row)
        if transition is not None:
            kind = EventKind.enter if transition is TransitionKind.enter else EventKind.leave
            event = GroupEvent(group_id=place.group_id, user_id=user_id, kind=kind.value,
                               place_id=place.id, place_name=place.name, ts=fix.ts)
            session.add(event)
            events.append(event)
    await session.flush()
    return events


async def add_sos(session: AsyncSession, user_id: int, now: float) -> list[GroupEvent]:
    """One SOS event per group of the user, with the last position (precise: it's an SOS)."""
    last = await last_fix(session, user_id)
    groups = await session.exec(select(Membership.group_id).where(Membership.user_id == user_id))
    events = []
    for group_id in groups.all():
        event = GroupEvent(group_id=group_id, user_id=user_id, kind=EventKind.sos.value,
                           lat=last.lat if last else None, lon=last.lon if last else None, ts=now)
        session.add(event)
        events.append(event)
    await session.flush()
    return events


async def list_events(
    session: AsyncSession, group_id: int, viewer_id: int, since: float | None = None,
    limit: int = 100,
) -> Sequence[GroupEvent]:
    """The group's events, newest first."""
    await require_member(session, group_id, viewer_id)
    limit = max(1, min(limit, EVENTS_MAX))
    query = select(GroupEvent).where(GroupEvent.group_id == group_id)
    if since is not None:
        query = query.where(col(GroupEvent.ts) >= since)
    rows = await session.exec(query.order_by(col(GroupEvent.ts).desc(), col(GroupEvent.id).desc())
                              .limit(limit))
    return rows.all()


def event_json(event: GroupEvent) -> dict[str, Any]:
    """A stored event as the bus and ``/events`` carry it.

    Its own id is ``event_id``, never ``id``: on the WebSocket ``id`` belongs
    to the receiver's own request, and a broadcast carrying one could be taken
    for the reply to it.
    """
    body: dict[str, Any] = {"event_id": event.id, "group_id": event.group_id,
                            "user_id": event.user_id, "kind": event.kind, "ts": event.ts}
    if event.place_id is not None or event.place_name is not None:
        body["place"] = {"id": event.place_id, "name": event.place_name}
    if event.lat is not None and event.lon is not None:
        body["location"] = {"lat": event.lat, "lon": event.lon}
    return body
