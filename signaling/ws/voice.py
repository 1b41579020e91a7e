"""WebSocket handlers for a room's voice: enter, leave, offer, candidate, mute, volume, music.

These run wherever the room is hosted: on the client's own node, on another
whole node through the relay, or on a media node (``signaling.media_node``),
which has no database. So nothing here reads the database: what needs it
(is the caller a member? may the group play music?) is checked by the node
the client is connected to, in ``signaling.ws.session.on_join``, and reaches
a media node with the relayed join as its *grant* (``on_relayed_join``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from common.errors import BadRequest, Forbidden, LimitExceeded, NotFound
from protocol import wire
from signaling.rooms import NEARBY_ROOM, Participant
from signaling.ws.connection import RoomConnection


class GrantedConnection(RoomConnection, Protocol):
    """A relayed client on the hosting node (``signaling.ws.relay.RemoteConnection``)."""

    grant: dict[str, object] | None
    """What the client's node checked of its join (None: nothing was relayed)."""

    def call_started(self) -> None:
        """Ask the client's node to push "call started" to the group."""


def check_not_in(conn: RoomConnection, room_id: str) -> None:
    """Refuse a second join of a room; forget one whose room has moved to another node."""
    known = conn.participants.get(room_id)
    if known is None:
        return
    here = conn.rooms.get(room_id)
    if here is not None and here.participants.get(known.participant_id) is known:
        raise BadRequest(f"already in room {room_id}")
    del conn.participants[room_id]  # its room moved to another node: join again


async def enter(conn: RoomConnection, room_id: str, radius_m: float | None,
                music_allowed: bool) -> tuple[dict[str, Any], bool]:
    """Join a room placed on this node (claiming it if free; ``Elsewhere`` if another node
    hosts it). Returns the ``joined`` reply and whether the call starts with this member."""
    state = conn.state
    participant: Participant = await state.cluster.admit(
        room_id, lambda: conn.rooms.join(room_id, conn, radius_m=radius_m))
    conn.participants[room_id] = participant
    room = conn.rooms.get(room_id)
    assert room is not None
    room.music_allowed = music_allowed  # the media room asks the room (RoomControls)
    speaking = room.media.speaking() if room.media is not None else set()
    others = [{**p.public(), "speaking": pid in speaking} for pid, p in room.participants.items()
              if pid != participant.participant_id]
    if room_id == NEARBY_ROOM:
        others = []  # strangers learn of each other only by proximity (``nearby`` events)
    reply = {"type": "joined", "room": room_id, "participant_id": participant.participant_id,
             "participants": others, "music_allowed": music_allowed}
    return reply, len(room.participants) == 1


async def on_relayed_join(conn: GrantedConnection, msg: wire.Join) -> dict[str, Any]:
    """A media node's join: the client's node checked it and relayed its grant.

    A join without a grant came from a node that did not check it, and is refused.
    """
    grant = conn.grant
    if grant is None or not msg.room.startswith("group:"):
        raise Forbidden("a media node hosts group rooms joined through a node that checked "
                        "the membership")
    check_not_in(conn, msg.room)
    reply, first = await enter(conn, msg.room, None, bool(grant.get("music_allowed")))
    if first:
        conn.call_started()  # the client's node pushes "call started" (it has the database)
    return reply


async def on_leave(session: RoomConnection, msg: wire.Leave) -> dict[str, Any]:
    participant = session.participant(msg.room)
    del session.participants[msg.room]
    await session.rooms.leave(participant)
    return {"type": "left", "room": msg.room}


async def on_offer(session: RoomConnection, msg: wire.Offer) -> dict[str, Any]:
    participant = session.participant(msg.room)
    media = await session.rooms.media(msg.room)
    answer = await media.connect(participant.participant_id, msg.sdp, msg.music_mids)
    return {"type": "answer", "room": msg.room, "sdp": answer}


async def on_candidate(session: RoomConnection, msg: wire.Candidate) -> None:
    participant = session.participant(msg.room)
    room = session.rooms.get(msg.room)
    if room is None or room.media is None:
        raise BadRequest("send an offer before candidates")
    candidate = msg.candidate.model_dump() if msg.candidate is not None else None
    await room.media.add_candidate(participant.participant_id, candidate)


async def on_mute(session: RoomConnection, msg: wire.Mute) -> dict[str, Any]:
    participant = session.participant(msg.room)
    participant.muted = msg.muted  # the media room asks the room (RoomControls) each tick
    session.rooms.broadcast(
        participant.room_id,
        {"type": "participant_muted", "room": participant.room_id,
         "participant_id": participant.participant_id, "muted": msg.muted},
        exclude=participant.participant_id, about=participant.participant_id,
    )
    return {"type": "muted", "room": participant.room_id, "muted": msg.muted}


async def on_volume(session: RoomConnection, msg: wire.Volume) -> dict[str, Any]:
    nearby = session.state.nearby
    for room_id, me in session.participants.items():
        room = session.rooms.get(room_id)
        ghost = (room_id == NEARBY_ROOM and nearby is not None
                 and msg.participant_id in nearby.ghosts)
        if room is not None and (msg.participant_id in room.participants or ghost):
            if msg.participant_id == me.participant_id:
                raise BadRequest("you do not hear yourself; set another participant's volume")
            if room.media is not None:
                room.media.set_volume(me.participant_id, msg.participant_id, msg.gain)
            return {"type": "volume", "room": room_id, "participant_id": msg.participant_id,
                    "gain": msg.gain}
    raise NotFound(f"no participant {msg.participant_id} in your rooms")


async def on_music(session: RoomConnection, msg: wire.Music) -> dict[str, Any]:
    participant = session.participant(msg.room)
    room = session.rooms.get(participant.room_id)
    assert room is not None
    if not room.music_allowed:
        raise LimitExceeded(
            "music needs a plan with the music entitlement", detail={"limit": "music"}
        )
    await session.state.music_uploads.ensure_local(msg.source)  # uploaded on another node?
    media = await session.rooms.media(participant.room_id)
    state = await media.music(msg.action, participant.participant_id, msg.source)
    return {"type": "music_state", "room": participant.room_id, **state}


ROOM_HANDLERS: dict[str, Callable[[Any, Any], Awaitable[dict[str, Any] | None]]] = {
    "leave": on_leave,
    "offer": on_offer,
    "candidate": on_candidate,
    "mute": on_mute,
    "volume": on_volume,
    "music": on_music,
}
"""A room's handlers after the join, the same on every kind of node."""


def rename(conn: RoomConnection, name: str) -> None:
    """Give ``conn`` its new display name and tell the others in its rooms on this node."""
    conn.display_name = name
    for room_id, participant in conn.participants.items():
        conn.rooms.broadcast(
            room_id,
            {"type": "participant_renamed", "room": room_id,
             "participant_id": participant.participant_id, "display_name": name},
            exclude=participant.participant_id, about=participant.participant_id,
        )
