"""WebSocket handlers for ephemeral chat and display names.

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

from common.errors import RateLimited
from groups.accounts import clean_display_name
from protocol import wire
from signaling.nearby import NEARBY_ROOM
from signaling.ws.connection import Connection

DISPLAY_NAME_CHANGES_PER_SESSION = 3


async def on_chat(session: Connection, msg: wire.Chat) -> dict[str, Any]:
    state = session.state
    participant = session.participant(msg.room)
    recipients: set[str] | None = None
    if msg.room == NEARBY_ROOM:
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


async def on_display_name(session: Connection, msg: wire.DisplayName) -> dict[str, Any]:
    """Rename yourself in your rooms (at most three times per connection)."""
    changes = session.renames
    if changes >= DISPLAY_NAME_CHANGES_PER_SESSION:
        raise RateLimited(
            f"display names can change at most {DISPLAY_NAME_CHANGES_PER_SESSION} times "
            "per session"
        )
    name = clean_display_name(msg.display_name)
    session.renames = changes + 1
    rename(session, name)
    return {"type": "display_name", "display_name": name,
            "changes_left": DISPLAY_NAME_CHANGES_PER_SESSION - changes - 1}


def rename(conn: Connection, name: str) -> None:
    """Give ``conn`` its new display name and tell the others in its rooms on this node."""
    conn.display_name = name
    for room_id, participant in conn.participants.items():
        conn.rooms.broadcast(
            room_id,
            {"type": "participant_renamed", "room": room_id,
             "participant_id": participant.participant_id, "display_name": name},
            exclude=participant.participant_id, about=participant.participant_id,
        )
