"""REST: location fixes, live group map, history, places, events, sharing, SOS.

Thin: validation and rules live in ``groups.location.fixes`` / ``groups.location.store``,
the store-then-publish sequences in ``groups.location.service``. The same
``parse_fix`` and per-member ``FixLimiter`` serve this edge and the WebSocket
one, so a phone waking in the background (REST) and a live session (WS)
cannot be held to different rules. Guests get 403 on every route here.

Fixes go through ``state.locations`` (``groups.location.service.LocationService``),
the same service the WebSocket handler calls. ``retention_loop`` is the
node's history retention job, started by the composition root.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from billing.entitlements import check_places, history_cutoff
from billing.service import entitlements_for_group, history_cutoffs
from common.errors import BadRequest
from groups.location import store
from groups.location.models import Precision
from groups.location.service import group_topic
from groups.service import require_member
from signaling import push_hooks
from signaling.deps import AppState, Db, State, UserId
from signaling.routes.params import GroupId, MemberId, PlaceId

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["location"])

RETENTION_INTERVAL_S = 3600.0


class PlaceCreate(BaseModel):
    name: str = Field(max_length=256)
    lat: float
    lon: float
    radius_m: float


class SharingChange(BaseModel):
    paused: bool = False
    precision: Precision = Precision.precise


@router.post("/locations")
async def post_location(
    user_id: UserId, state: State, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """One fix, as the WebSocket ``location`` message carries it (lat, lon, accuracy_m, ts...)."""
    fix, events = await state.locations.report_fix(str(user_id), user_id, body, state.clock())
    await push_hooks.group_events(state, events)
    return {"ok": True, "ts": fix.ts, "events": events}


@router.get("/groups/{group_id}/locations")
async def group_locations(group_id: GroupId, user_id: UserId, db: Db) -> dict[str, Any]:
    return {"group_id": group_id, "members": await store.group_locations(db, group_id, user_id)}


@router.get("/groups/{group_id}/members/{member_id}/history")
async def member_history(
    group_id: GroupId, member_id: MemberId, user_id: UserId, state: State, db: Db,
    start: Annotated[float | None, Query(alias="from")] = None,
    end: Annotated[float | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """GeoJSON Feature (LineString + timestamps); default: the last 24 hours."""
    now = state.clock()
    end = now if end is None else end
    start = end - 86_400.0 if start is None else start
    await require_member(db, group_id, user_id)
    # The owner's plan says how far back history goes (retention trims the rest later).
    not_before = history_cutoff(await entitlements_for_group(db, group_id, now, state.plans), now)
    return await store.history(db, group_id, user_id, member_id, start, end, not_before)


@router.get("/groups/{group_id}/places")
async def list_places(group_id: GroupId, user_id: UserId, db: Db) -> dict[str, Any]:
    return {"places": [store.place_json(p) for p in await store.list_places(db, group_id, user_id)]}


@router.post("/groups/{group_id}/places", status_code=201)
async def create_place(
    group_id: GroupId, body: PlaceCreate, user_id: UserId, state: State, db: Db
) -> dict[str, Any]:
    now = state.clock()
    existing = await store.list_places(db, group_id, user_id)  # also: members only
    check_places(await entitlements_for_group(db, group_id, now, state.plans), len(existing))
    place = await store.create_place(
        db, group_id, user_id, body.name, body.lat, body.lon, body.radius_m, now
    )
    await db.commit()
    shown = store.place_json(place)
    await _place_changed(state, group_id, "added", shown)
    return shown


@router.put("/groups/{group_id}/places/{place_id}")
async def update_place(
    group_id: int, place_id: int, body: PlaceCreate, user_id: UserId, state: State, db: Db
) -> dict[str, Any]:
    """Move, resize or rename a place (owner/admin): the web map drags centre and radius."""
    place = await store.update_place(
        db, group_id, user_id, place_id, body.name, body.lat, body.lon, body.radius_m
    )
    await db.commit()
    shown = store.place_json(place)
    await _place_changed(state, group_id, "changed", shown)
    return shown


@router.delete("/groups/{group_id}/places/{place_id}", status_code=204)
async def delete_place(
    group_id: GroupId, place_id: PlaceId, user_id: UserId, state: State, db: Db
) -> Response:
    await store.delete_place(db, group_id, user_id, place_id)
    await db.commit()
    await _place_changed(state, group_id, "deleted", {"id": place_id})
    return Response(status_code=204)


async def _place_changed(
    state: AppState, group_id: int, change: str, place: dict[str, Any]
) -> None:
    """Tell the group's live members (every node) that its places changed, once committed."""
    await state.bus.publish(group_topic(group_id), {
        "type": "place_changed", "group_id": group_id, "change": change, "place": place,
    })


@router.get("/groups/{group_id}/events")
async def list_events(
    group_id: GroupId, user_id: UserId, db: Db,
    since: float | None = None, limit: Annotated[int, Query(ge=1, le=store.EVENTS_MAX)] = 100,
) -> dict[str, Any]:
    events = await store.list_events(db, group_id, user_id, since, limit)
    return {"events": [store.event_json(e) for e in events]}


@router.put("/groups/{group_id}/sharing")
async def put_sharing(
    group_id: GroupId, body: SharingChange, user_id: UserId, state: State
) -> dict[str, Any]:
    return await state.locations.change_sharing(
        group_id, user_id, body.paused, body.precision.value, state.clock()
    )


@router.post("/sos")
async def post_sos(user_id: UserId, state: State) -> dict[str, Any]:
    messages = await state.locations.raise_sos(user_id, state.clock())
    if not messages:
        raise BadRequest("you are in no group: nobody to alert")
    await push_hooks.group_events(state, messages)
    return {"alerted_groups": [m["group_id"] for m in messages], "events": messages}


# --- the retention job (started by the composition root) -----------------


async def retention_pass(state: AppState) -> int:
    now = state.clock()
    async with state.sessions() as db:  # per-group history windows from the owners' plans
        cutoffs = await history_cutoffs(db, now, state.plans)
    return await state.locations.run_retention(
        state.settings.location_retention_days, now, cutoffs
    )


async def retention_loop(state: AppState) -> None:
    while True:
        try:
            await retention_pass(state)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("location retention pass failed; retrying in an hour")
        await asyncio.sleep(RETENTION_INTERVAL_S)
