"""What a message handler sees of its WebSocket connection.

Handlers (``signaling.ws.chat``, ``signaling.ws.location``, the voice
handlers) are typed against this protocol, not against the session class,
so the session imports its handlers and nothing imports the session back.
``signaling.ws.session.ClientSession`` is the implementation.
"""

from __future__ import annotations

from typing import Any, Protocol

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
