"""Draining a node before it stops (SIGTERM): its rooms move, its clients are told.

1. The node leaves the registry and releases its rooms' claims
   (``cluster.drain``): no room is placed here any more.
2. Clients relayed here from other nodes get ``left`` with reason
   ``host_lost`` over their link (``relay.drain``); they join again and the
   room is placed on a live node. Their sockets, on other nodes, stay open.
3. Clients connected here get ``{"type": "reconnect", "reason": "draining"}``:
   their socket is about to close; they reconnect (through the load
   balancer, to another node) and join again.

``signaling.cli`` runs this on the first SIGTERM or SIGINT, then lets the
server stop as usual; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging

from signaling.deps import AppState

log = logging.getLogger(__name__)

DRAIN_FLUSH_S = 0.3
"""Time for the last messages to leave the outboxes before the sockets close."""
DRAIN_TIMEOUT_S = 10.0
"""A drain that takes longer (Redis unreachable, say) is abandoned: the node stops anyway."""


async def drain(state: AppState) -> None:
    await state.cluster.drain()
    await state.relay.drain()
    told = 0
    for room in state.rooms.rooms():
        for participant in room.participants.values():
            participant.peer.send({"type": "reconnect", "reason": "draining"})
            told += 1
    log.info("draining: rooms released, %d participants told to reconnect", told)
    await asyncio.sleep(DRAIN_FLUSH_S)
