"""What a message handler sees of its WebSocket connection.

Handlers (``signaling.ws.chat``, ``signaling.ws.location``, the voice
handlers) are typed against this protocol, not against the session class,
so the session imports its handlers and nothing imports the session back.
``signaling.ws.session.ClientSession`` is the implementation.
"""

from __future__ import annotations

from typing import Any, Protocol

from common.errors import BadRequest, NotFound
from signaling.auth import Identity
from signaling.deps import AppState
from signaling.rooms import Participant, RoomRegistry


class Connection(Protocol):
    state: AppState
    rooms: RoomRegistry
    identity: Identity
    subject: str
    display_name: str
    participants: dict[str, Participant]
    """room id -> this connection's participant in it."""
    last_fix: tuple[float, float] | None
    renames: int

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message to the client (never blocks)."""

    def participant(self, room: str | None) -> Participant:
        """The participant for ``room``, or for the only room joined if None."""


def participant_in(participants: dict[str, Participant], room: str | None) -> Participant:
    """The participant for ``room``, or for the only room joined if None (both sides of a
    relayed connection answer ``Connection.participant`` with this)."""
    if room is None:
        if len(participants) != 1:
            raise BadRequest(f"say which room: you are in {len(participants)} rooms")
        return next(iter(participants.values()))
    participant = participants.get(room)
    if participant is None:
        raise NotFound(f"you are not in room {room}")
    return participant
