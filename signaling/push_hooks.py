"""When to push, and to whom: invites accepted, place alerts, SOS, calls.

Pushes are sent where the event happens (the node that handled the request),
never from the bus fan-out, which runs on every node and would push once per
node. The dispatcher (``groups.push``) sends in the background with retries,
drops dead tokens and honours each user's muted categories.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from groups import service
from groups.models import Group, User
from groups.push import messages
from signaling.deps import AppState
from signaling.rooms import group_of

log = logging.getLogger(__name__)

CALL_PUSH_ONCE_S = 120.0
"""At most one ``call_started`` push per group in this window, across all nodes."""


async def _names(state: AppState, group_id: int, user_id: int) -> tuple[str, str, list[int]] | None:
    """The group's name, the actor's display name, and the group's member ids."""
    async with state.sessions() as db:
        group = await db.get(Group, group_id)
        user = await db.get(User, user_id)
        if group is None or user is None:
            return None
        return group.name, user.display_name, await service.member_ids(db, group_id)


async def invite_accepted(state: AppState, group_id: int, new_member_id: int) -> None:
    """Tell the group's other members that someone joined."""
    dispatcher = state.push
    found = await _names(state, group_id, new_member_id)
    if found is None:
        return
    group_name, member_name, members = found
    dispatcher.notify([m for m in members if m != new_member_id],
                      messages.invite_accepted(group_id, group_name, member_name))


async def group_events(state: AppState, events: Iterable[dict[str, Any]]) -> None:
    """Push place enter/leave and SOS events to the group's other members."""
    dispatcher = state.push
    for event in events:
        group_id, user_id = int(event["group_id"]), int(event["user_id"])
        found = await _names(state, group_id, user_id)
        if found is None:
            continue
        group_name, member_name, members = found
        if event["type"] == "sos":
            where = event.get("location") or {}
            message = messages.sos(group_id, group_name, member_name,
                                   where.get("lat"), where.get("lon"))
        elif event["type"] == "place_event":
            message = messages.place_transition(
                group_id, group_name, member_name, event["place"]["name"],
                event["kind"] == "enter",
            )
        else:
            continue
        dispatcher.notify([m for m in members if m != user_id], message)


def relayed_call_started(state: AppState, session: Any, room_id: str) -> None:
    """A media node started ``room_id``'s call for a member connected here: push from
    here (``signaling.ws.relay``, op ``call_started``), where the database is."""
    user_id, group_id = session.identity.user_id, group_of(room_id)
    if user_id is None or group_id is None:
        return
    state.spawn(call_started(state, group_id, user_id, present=()),
                name=f"push-call-{room_id}")


async def call_started(state: AppState, group_id: int, started_by: int,
                       present: Iterable[int]) -> None:
    """The first person in a group room: push to members who are not in it.

    Once per group per ``CALL_PUSH_ONCE_S`` across every node (``state.cluster.once``):
    a room started at the same time on two nodes, or placed again on another
    node after its node failed, does not push twice.
    """
    if not await state.cluster.once(f"call_started:{group_id}", CALL_PUSH_ONCE_S):
        return
    dispatcher = state.push
    found = await _names(state, group_id, started_by)
    if found is None:
        return
    group_name, member_name, members = found
    here = set(present) | {started_by}
    dispatcher.notify([m for m in members if m not in here],
                      messages.call_started(group_id, group_name, member_name))
