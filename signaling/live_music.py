"""Music entitlements applied to live rooms, on every kind of node.

A plan change reaches every node as a notice on the bus topic
``ENTITLEMENTS_TOPIC`` (``{"user_id", "group_ids", "music"}``: the webhook or
``disco admin grant`` sends it); each node switches music on or off in its
own live rooms of those groups (``Room.music_allowed``, which the media room
asks each tick). A whole node also re-reads the plans behind its rooms every
``entitlements_recheck_s`` (``signaling.routes.billing.recheck_rooms``), which
catches what no notice carries (a grant that ran out), and announces the
answer for the rooms it relays to media nodes, which have no database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from billing.plans import ENTITLEMENTS_TOPIC
from common.bus import LocalBus, RedisBus
from signaling.rooms import RoomRegistry

log = logging.getLogger(__name__)


def set_music(rooms: RoomRegistry, allowed_by_group: dict[int, bool]) -> int:
    """Set ``Room.music_allowed`` (the owner: a live media room asks it each tick);
    returns how many live rooms changed."""
    changed = 0
    for group_id, allowed in allowed_by_group.items():
        room = rooms.get(f"group:{group_id}")
        if room is None or room.music_allowed == allowed:
            continue
        room.music_allowed = allowed  # a live media room stops its music on its next tick
        changed += 1
    return changed


def apply_notice(rooms: RoomRegistry, message: dict[str, Any]) -> int:
    """Switch music on/off in this node's live rooms of the groups a notice names."""
    allowed = bool(message.get("music"))
    return set_music(rooms, {int(g): allowed for g in message.get("group_ids", [])})


async def follow_notices(bus: LocalBus | RedisBus, rooms: RoomRegistry,
                         recheck: Callable[[], Awaitable[object]] | None = None,
                         every_s: float = 0.0) -> None:
    """Apply every notice to this node's rooms until cancelled (a job of every node);
    with ``recheck``, also run it every ``every_s``. Both in this one task: a notice
    that arrives during a re-check is applied after it, so the re-check's older
    reading of the plans never overrides it."""
    subscription = bus.subscription()
    await subscription.add(ENTITLEMENTS_TOPIC)
    loop = asyncio.get_running_loop()
    next_check = loop.time() + every_s
    try:
        while True:
            try:
                if recheck is None:
                    item = await subscription.get()
                else:
                    try:
                        item = await asyncio.wait_for(subscription.get(),
                                                      max(0.0, next_check - loop.time()))
                    except TimeoutError:
                        next_check = loop.time() + every_s
                        await recheck()
                        continue
                if item is None:
                    return
                _topic, message = item
                if apply_notice(rooms, message):
                    log.info("music %s in the live rooms of groups %s",
                             "allowed" if message.get("music") else "stopped",
                             message.get("group_ids"))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not apply new entitlements to live rooms")
    finally:
        await subscription.close()
