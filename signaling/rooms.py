"""Rooms on this node: who is present, and each room's media unit.

A room is ``group:<id>`` (members of a group) or ``nearby`` (people near each
other). Presence lives only as long as the connection. The media side (an
``sfu.room.MediaRoom``) is created when the first participant sends an offer
and closed when the room empties. Each node owns whole rooms; see README
"Scaling out".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from common.errors import Conflict, NotFound
from protocol import wire

if TYPE_CHECKING:
    from sfu.room import MediaConfig, MediaRoom

log = logging.getLogger(__name__)

Message = dict[str, Any]

NEARBY_ROOM = "nearby"
"""The one room of strangers near each other (``signaling.nearby``); the others are
``group:<id>``."""


def group_of(room_id: str) -> int | None:
    """The group id of a ``group:<id>`` room; None for any other room id."""
    tail = room_id[6:]
    return int(tail) if room_id.startswith("group:") and tail.isascii() and tail.isdigit() \
        else None


class Peer(Protocol):
    """The connection side of a participant: something that takes messages."""

    subject: str
    display_name: str

    def send(self, message: Message) -> None: ...


@dataclass
class Participant:
    participant_id: str
    room_id: str
    peer: Peer
    muted: bool = False
    radius_m: float | None = None

    def public(self) -> Message:
        user_id = int(self.peer.subject) if self.peer.subject.isdigit() else None
        return {
            "participant_id": self.participant_id,
            "user_id": user_id,
            "display_name": self.peer.display_name,
            "muted": self.muted,
        }


@dataclass
class Room:
    room_id: str
    participants: dict[str, Participant] = field(default_factory=dict)
    media: MediaRoom | None = None
    music_allowed: bool = False

    def is_muted(self, participant_id: str) -> bool:
        """For the media room (``sfu.room.RoomControls``): this room owns who is muted."""
        participant = self.participants.get(participant_id)
        return participant is not None and participant.muted

    def by_subject(self, subject: str) -> Participant | None:
        return next((p for p in self.participants.values() if p.peer.subject == subject), None)


class RoomRegistry:
    def __init__(self, media_config: Callable[[], MediaConfig] | None = None) -> None:
        """``media_config`` builds the SFU's config when the first media room starts."""
        self._rooms: dict[str, Room] = {}
        self._media_config = media_config
        self._lock = asyncio.Lock()
        self.on_leave: list[Callable[[Participant], None]] = []
        # room id -> who may hear about a participant (default: the whole room).
        # The nearby room uses it so strangers learn only of people in range.
        self.audiences: dict[str, Callable[[str], set[str]]] = {}
        # room id -> called when that room's media starts (the nearby room sets its plan).
        self.media_started: dict[str, Callable[[], None]] = {}
        # room id -> that room's change to the SFU config (the nearby room: no room-wide top-N).
        self.media_config_for: dict[str, Callable[[MediaConfig], MediaConfig]] = {}

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def rooms(self) -> list[Room]:
        return list(self._rooms.values())

    def participant_count(self) -> int:
        return sum(len(r.participants) for r in self._rooms.values())

    async def join(self, room_id: str, peer: Peer, radius_m: float | None = None) -> Participant:
        """Add ``peer``; the same user still present from an older connection is replaced."""
        room = self._rooms.setdefault(room_id, Room(room_id))
        if any(p.peer is peer for p in room.participants.values()):
            raise Conflict(f"already in room {room_id}")
        stale = room.by_subject(peer.subject)
        if stale is not None:
            stale.peer.send({"type": "left", "room": room_id, "reason": "replaced"})
            await self.leave(stale)
            room = self._rooms.setdefault(room_id, room)
        participant = Participant("p_" + secrets.token_hex(6), room_id, peer, radius_m=radius_m)
        room.participants[participant.participant_id] = participant
        self.broadcast(
            room_id, {"type": "participant_joined", "room": room_id, **participant.public()},
            exclude=participant.participant_id, about=participant.participant_id,
        )
        return participant

    async def leave(self, participant: Participant) -> None:
        room = self._rooms.get(participant.room_id)
        if room is None or room.participants.pop(participant.participant_id, None) is None:
            return
        for listener in self.on_leave:
            listener(participant)
        if room.media is not None:
            await room.media.disconnect(participant.participant_id)
        self.broadcast(
            room.room_id,
            {"type": "participant_left", "room": room.room_id,
             "participant_id": participant.participant_id},
            about=participant.participant_id,
        )
        # Another leave may have run while we awaited: only the first to see
        # the room empty (and still registered) removes it and closes its media.
        if not room.participants and self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
            media, room.media = room.media, None
            if media is not None:
                await media.close()

    def broadcast(
        self, room_id: str, message: Message, exclude: str | None = None,
        about: str | None = None,
    ) -> None:
        """Send to the room; a message ``about`` a participant goes to its audience only."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        audience_of = self.audiences.get(room_id)
        audience = audience_of(about) if audience_of is not None and about else None
        message = wire.Shared(message)  # serialized once for everybody
        for pid, participant in room.participants.items():
            if pid != exclude and (audience is None or pid in audience):
                participant.peer.send(message)

    async def media(self, room_id: str) -> MediaRoom:
        """The room's media unit, started on first use."""
        room = self._rooms.get(room_id)
        if room is None:
            raise NotFound(f"no room {room_id}")
        async with self._lock:
            if room.media is None:
                from sfu.room import MediaConfig, MediaRoom

                config = self._media_config() if self._media_config else MediaConfig()
                adjust = self.media_config_for.get(room_id)
                if adjust is not None:
                    config = adjust(config)
                media = MediaRoom(room_id, config, lambda event: self._media_event(room_id, event),
                                  controls=room)
                await media.start()
                room.media = media
                started = self.media_started.get(room_id)
                if started is not None:
                    started()
        return room.media

    def _media_event(self, room_id: str, event: Message) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            return
        if event.get("type") in ("peer_state", "quality"):
            # About one participant's own connection: to them only. (The media room
            # drops a failed peer itself; its owner re-offers.)
            participant = room.participants.get(str(event.get("participant_id")))
            if participant is not None:
                participant.peer.send({**event, "room": room_id})
        else:
            about = event.get("participant_id")
            self.broadcast(room_id, {**event, "room": room_id},
                           about=str(about) if about else None)

    async def close(self) -> None:
        for room in list(self._rooms.values()):
            if room.media is not None:
                await room.media.close()
        self._rooms.clear()
