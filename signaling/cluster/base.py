"""The interface every cluster implementation offers (``local`` and ``redis_cluster``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from common.errors import Elsewhere
from signaling.cluster.placement import NodeInfo
from signaling.rooms import Participant

T = TypeVar("T")


def elsewhere(room_id: str, hosting: NodeInfo) -> Elsewhere:
    """The error for a join that reached a node other than the room's."""
    where = f" at {hosting.url}" if hosting.url else ""
    return Elsewhere(
        f"room {room_id} is hosted by node {hosting.node_id}{where}: connect there and join again",
        detail={"room": room_id, "node": hosting.node_id, "url": hosting.url or None},
    )


class Cluster(Protocol):
    node_id: str

    async def start(self) -> None:
        """Connect, register this node and start its heartbeat."""

    async def close(self) -> None:
        """Stop the heartbeat, release this node's rooms and deregister."""

    async def drain(self) -> None:
        """Stop taking rooms: leave the registry and release this node's rooms."""

    async def once(self, key: str, ttl_s: float) -> bool:
        """True for the first caller of ``key`` on any node within ``ttl_s``, else False."""

    async def place(self, room_id: str) -> NodeInfo:
        """The node hosting ``room_id``, claiming it (atomically) if no live node does.

        Raises ``Unavailable`` if the shared store cannot be reached or no
        live node has capacity left.
        """

    async def admit(self, room_id: str, join: Callable[[], Awaitable[T]]) -> T:
        """Run ``join`` if the room is placed here (claiming it if free), else raise
        ``Elsewhere`` naming the hosting node; ``Unavailable`` if placement cannot run."""

    async def live_node_ids(self) -> set[str]:
        """The nodes whose heartbeat is fresh (``Unavailable`` if that cannot be read)."""

    def participant_left(self, participant: Participant) -> None:
        """A participant left a room here: release the room's claim if it is now empty."""


class RelayService(Protocol):
    """What a session asks of the relay (``signaling.ws.relay.Relay``, which has more)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def relayed_rooms(self) -> set[str]:
        """The rooms this node's sessions are in on other nodes."""

    def participant_in(self, session: Any, room: str) -> str | None:
        """The session's participant id in a room relayed to another node, if any."""

    async def drain(self) -> None:
        """Tell the clients relayed to rooms here to join again (``left`` ``host_lost``)
        and close their links."""

    def leave_room(self, session: Any, room: str) -> bool:
        """Take the session out of a relayed room (its participant leaves the hosting node);
        False if that room is not relayed for it."""

    def session_closed(self, session: Any) -> None:
        """The session ended: close its links (their participants leave the hosting node)."""
