"""What a message handler sees of its WebSocket connection, and of the node it runs on.

Handlers (``signaling.ws.chat``, ``signaling.ws.location``, ``signaling.ws.voice``)
are typed against these protocols, not against the session class, so the
session imports its handlers and nothing imports the session back.
``signaling.ws.session.ClientSession`` is the implementation on a whole node;
``signaling.ws.relay.RemoteConnection`` is a client of another node's, whose
room is hosted here.

Two levels, because a media node (``signaling.media_node``) hosts rooms and
nothing else: ``RoomConnection`` and ``RoomNode`` are what the room handlers
(voice, chat) need, which both kinds of node have; ``Connection`` adds the
whole node's ``AppState`` (database, locations, push) for the other handlers.
Nothing here is imported at run time but the light modules, so a media node
can import this without FastAPI or the ORM.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from common.errors import BadRequest, NotFound
from signaling.auth import Identity
from signaling.rooms import Participant, RoomRegistry

if TYPE_CHECKING:
    from common.bus import LocalBus, RedisBus
    from common.settings import Settings
    from groups.chat import ChatLog
    from signaling.cluster.base import Cluster, RelayService
    from signaling.deps import AppState
    from signaling.nearby import NearbyRoom
    from signaling.nearby_mesh import NearbyMesh


class UploadCache(Protocol):
    async def ensure_local(self, source: str | None) -> None:
        """Copy an uploaded music source into this node's folder if it is not there."""


class RoomNode(Protocol):
    """What the room handlers use of the node they run on (read-only)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def rooms(self) -> RoomRegistry: ...
    @property
    def cluster(self) -> Cluster: ...
    @property
    def relay(self) -> RelayService: ...
    @property
    def bus(self) -> LocalBus | RedisBus: ...
    @property
    def chat(self) -> ChatLog: ...
    @property
    def music_uploads(self) -> UploadCache: ...
    @property
    def nearby(self) -> NearbyRoom | None:
        """The nearby room's proximity (None on a media node: it hosts group rooms only)."""
    @property
    def nearby_mesh(self) -> NearbyMesh | None: ...

    def clock(self) -> float: ...

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None: ...


class RoomConnection(Protocol):
    """A client as the room handlers see it, on whichever kind of node."""

    @property
    def state(self) -> RoomNode: ...

    rooms: RoomRegistry
    identity: Identity
    subject: str
    display_name: str
    participants: dict[str, Participant]
    """room id -> this connection's participant in it."""

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message to the client (never blocks)."""

    def participant(self, room: str | None) -> Participant:
        """The participant for ``room``, or for the only room joined if None."""


class Connection(RoomConnection, Protocol):
    """A client of a whole node (``disco serve``): the handlers may use all of it."""

    state: AppState
    last_fix: tuple[float, float] | None
    renames: int


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
