"""WebSocket handlers for positions: ``location`` and ``radius``.

A fix goes through ``state.locations.report_fix`` (validated once, rate-limited
per sender, stored and published to the sender's groups if the sender has an
account: the same call the REST route makes), then into the nearby room's
proximity index if the sender is there.
"""

from __future__ import annotations

from typing import Any

from common.errors import BadRequest, Forbidden
from protocol import wire
from signaling import push_hooks
from signaling.nearby import NEARBY_ROOM
from signaling.ws.connection import Connection


async def on_location(session: Connection, msg: wire.Location) -> dict[str, Any] | None:
    state = session.state
    fix, events = await state.locations.report_fix(
        session.subject, session.identity.user_id,
        msg.model_dump(exclude={"type", "id"}, exclude_none=True), state.clock(),
    )
    session.last_fix = (fix.lat, fix.lon)
    participant = session.participants.get(NEARBY_ROOM)
    if participant is not None:
        state.nearby.move(participant, fix.lat, fix.lon)
    # Place events reach the sender through the group's bus topic, like everyone.
    await push_hooks.group_events(state, events)
    return {"type": "location_ok", "ts": fix.ts} if msg.id is not None else None


async def on_radius(session: Connection, msg: wire.Radius) -> dict[str, Any]:
    participant = session.participants.get(NEARBY_ROOM)
    if participant is None:
        raise BadRequest("join the nearby room before setting a radius")
    session.state.nearby.set_radius(participant, msg.radius_m)
    return {"type": "radius", "room": NEARBY_ROOM, "radius_m": msg.radius_m}


async def on_sos(session: Connection, msg: wire.Sos) -> dict[str, Any]:
    """An alert to every member of all the sender's groups, with the last position."""
    user_id = session.identity.user_id
    if user_id is None:
        raise Forbidden("SOS goes to your groups; guests have none")
    state = session.state
    sent = await state.locations.raise_sos(user_id, state.clock())
    await push_hooks.group_events(state, sent)
    return {"type": "sos_sent", "groups": [m["group_id"] for m in sent]}
