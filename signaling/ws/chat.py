"""The WebSocket handler for ephemeral chat.

Chat lives in memory on the room's node for 30 minutes (``groups.chat``).
In a group room every participant reads it, whichever node they are
connected to: the message goes over the group's bus topic (``group:<id>``,
the room's own id), and each session in the room passes it on
(``ClientSession._bus_reader``). In the nearby room a message reaches exactly
the people who can hear the sender: those on this node directly, those on
other nodes (ghosts here) through their node (``NearbyMesh.send_chat``).
"""

from __future__ import annotations

from typing import Any

from protocol import wire
from signaling.rooms import NEARBY_ROOM
from signaling.ws.connection import RoomConnection


async def on_chat(session: RoomConnection, msg: wire.Chat) -> dict[str, Any]:
    """Post to the room's chat (on the room's node: a media node runs this too)."""
    state = session.state
    participant = session.participant(msg.room)
    recipients: set[str] | None = None
    if msg.room == NEARBY_ROOM:
        assert state.nearby is not None  # the nearby room is never on a media node
        recipients = state.nearby.hearers_of(participant)
    message = state.chat.post(msg.room, participant.participant_id, msg.text, state.clock(),
                              recipients)
    wire_message = {**message.to_json(), "display_name": session.display_name}
    room = session.rooms.get(msg.room)
    if msg.room == NEARBY_ROOM:
        if room is not None:
            for pid, other in room.participants.items():
                if pid != participant.participant_id and message.visible_to(pid):
                    other.peer.send(wire_message)
        mesh = state.nearby_mesh
        if mesh is not None and recipients:
            await mesh.send_chat(recipients, wire_message)
    else:
        # Over the group's bus topic only (never also directly): every session
        # in this room, on any node, passes it on once; the sender's does not.
        await state.bus.publish(msg.room, wire_message)
    return {**wire_message, "type": "chat_sent", "recipients": len(recipients)
            if recipients is not None else len(room.participants) - 1 if room else 0}
