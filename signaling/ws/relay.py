"""Any node accepts any WebSocket: a group room hosted by another node is relayed there.

When a ``join`` reaches a node (the *accepting* node) while the room is
placed on another live node (the *hosting* node), the accepting node opens a
*link* for that (connection, room) and forwards the room's client messages
(join, leave, offer, candidate, mute, volume, music, chat) to the hosting
node over the bus topic ``relay:<node id>``. There a ``RemoteConnection``
(the ``Connection`` protocol the handlers are typed against) runs the same
handlers; its replies and room events go back on ``relay:<accepting node>``
and the accepting node's session writes them to the client. The SDP answer
and ICE candidates come from the hosting node, so media flows straight to it.

Messages on the bus (JSON), each naming its ``link``:

- to the hosting node: ``{"op": "msg", "link", "origin", "identity", "message"}``
  (the client message as validated; a ``join`` also carries ``grant``, what the
  accepting node checked of it, for a media node that has no database),
  ``{"op": "rename", "link", "display_name"}`` (a ``display_name`` change,
  checked on the accepting node), ``{"op": "close", "link"}``;
- to the accepting node: ``{"op": "out", "link", "message"}``, and
  ``{"op": "call_started", "link"}`` from a media node whose room the link's
  client started (the accepting node sends the push).

Batching: the writer publishes what has queued up meanwhile together, one
``{"op": "batch", "items": [...]}`` per node, and a room event going to many
links of one node (a broadcast: the same message object) travels once, as
``{"op": "out", "links": [...], "message"}`` (``coalesce``). A room whose
members are all relayed (on a media node) thus costs one publish per
accepting node per event, not one per member. Each link's messages keep
their order.

Order: one session forwards one message at a time, and the hosting node runs
one link's messages one at a time (an offer before its candidates).

Failures, each with a clear message, never silence:

- a relayed message for a link the hosting node does not know (it restarted),
  or that no node receives (the hosting node is gone), gets ``error`` code
  ``moved``; the link is dropped and the next ``join`` places the room again;
- the hosting node's heartbeat lapses: the accepting node tells its clients
  ``{"type": "left", "room", "reason": "host_lost"}``; they join again and the
  room is placed on a live node;
- the accepting node dies: the hosting node closes its links (their
  participants leave) once that node's heartbeat has lapsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from common.errors import DiscoError, Elsewhere
from common.tasks import cancel_and_wait
from protocol import wire
from signaling.auth import Identity
from signaling.rooms import Participant
from signaling.ws import voice
from signaling.ws.connection import participant_in

if TYPE_CHECKING:
    from signaling.cluster.base import Cluster
    from signaling.ws.connection import Connection, RoomNode

log = logging.getLogger(__name__)

RELAYED_TYPES = frozenset({"join", "leave", "offer", "candidate", "mute", "volume", "music",
                           "chat"})
LIVENESS_CHECK_S = 1.0
"""How often links are checked against the other side's heartbeat."""
LINK_INBOX_MAX = 256
DROPPED_LINKS_KEPT = 256
WRITE_BATCH_MAX = 512
"""Queued bus messages the writer takes at once (one publish per node among them)."""

Handler = Callable[[Any, Any], Awaitable[dict[str, Any] | None]]
Bus = Any  # common.bus.LocalBus | RedisBus (publish, subscription)
CallStarted = Callable[[Any, str], None]
"""(the accepting node's session, room id): a relayed member started the room's call."""


def topic(node_id: str) -> str:
    return f"relay:{node_id}"


@dataclass
class Link:
    """The accepting side of one relayed (connection, room)."""

    link_id: str
    session: Connection
    room: str
    host: str
    participant_id: str | None = None
    others: set[str] = field(default_factory=set)
    """Participant ids in the room (to route ``volume``, which names no room)."""


class RemoteConnection:
    """The hosting side of a link: a connection whose client is on another node."""

    def __init__(self, relay: Relay, state: RoomNode, link_id: str, origin: str,
                 identity: Identity, grant: dict[str, object] | None = None) -> None:
        self.relay = relay
        self.state = state
        self.rooms = state.rooms
        self.link_id = link_id
        self.origin = origin
        self.identity = identity
        self.subject = identity.subject
        self.display_name = identity.display_name
        self.participants: dict[str, Participant] = {}
        self.last_fix: tuple[float, float] | None = None
        self.renames = 0
        self.grant = grant
        """What the accepting node checked of the join (``signaling.ws.voice.on_relayed_join``)."""
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(LINK_INBOX_MAX)
        self.worker: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.relay.post(topic(self.origin), {"op": "out", "link": self.link_id,
                                             "message": message})

    def participant(self, room: str | None) -> Participant:
        return participant_in(self.participants, room)

    def call_started(self) -> None:
        self.relay.post(topic(self.origin), {"op": "call_started", "link": self.link_id})


class Relay:
    """This node's side of every link, accepting and hosting."""

    def __init__(self, node_id: str, bus: Bus, cluster: Cluster,
                 state: Callable[[], RoomNode], handlers: Mapping[str, Handler],
                 call_started: CallStarted | None = None) -> None:
        self.node_id = node_id
        self.bus = bus
        self.cluster = cluster
        self._state = state
        self.handlers = handlers
        """The local handlers the hosting side runs (never the relaying ones)."""
        self.call_started = call_started
        """Pushes "call started" for a relayed member (None on a media node: no database)."""
        self.links: dict[str, Link] = {}
        self.dropped: dict[str, Link] = {}
        """Recently closed links (oldest first): replies still on their way reach the client."""
        self.by_session: dict[Any, dict[str, Link]] = {}
        self.remote: dict[str, RemoteConnection] = {}
        self._out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription = bus.subscription()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self._subscription.add(topic(self.node_id))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name="relay-reader"),
                       loop.create_task(self._write(), name="relay-writer"),
                       loop.create_task(self._watch(), name="relay-liveness")]

    async def close(self) -> None:
        for conn in list(self.remote.values()):
            await self._close_remote(conn)
        await self._subscription.close()
        await cancel_and_wait(*self._tasks)

    def post(self, to: str, message: dict[str, Any]) -> None:
        """Queue a bus message; one writer sends them in order."""
        self._out.put_nowait((to, message))

    async def _write(self) -> None:
        while True:
            queued = [await self._out.get()]
            while not self._out.empty() and len(queued) < WRITE_BATCH_MAX:
                queued.append(self._out.get_nowait())
            for to, items in coalesce(queued).items():
                message = items[0] if len(items) == 1 else {"op": "batch", "items": items}
                try:
                    heard = await self.bus.publish(to, message)
                except Exception:
                    log.exception("relay: could not publish to %s", to)
                    heard = 0
                if not heard:
                    for item in items:
                        if item.get("op") == "msg":
                            self._host_gone(str(item["link"]), item["message"])

    def _host_gone(self, link_id: str, message: dict[str, Any]) -> None:
        """No node listens where the link points: say so, never drop it silently."""
        link = self.links.get(link_id)
        if link is not None:
            self._deliver(link_id, wire.server_message(
                "error", message.get("id"), code="moved",
                message=f"room {link.room} is no longer on node {link.host}; join it again"))

    async def _read(self) -> None:
        async for _topic, message in self._subscription:
            if message.get("op") == "batch" and isinstance(message.get("items"), list):
                for item in message["items"]:
                    await self._handle(item)
            else:
                await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            op = message.get("op")
            if op == "out":
                if "links" in message:  # one room event for several links: encoded once
                    shared = wire.Shared(message["message"])
                    for link_id in message["links"]:
                        self._deliver(str(link_id), shared)
                else:
                    self._deliver(str(message["link"]), dict(message["message"]))
            elif op == "msg":
                self._host(message)
            elif op == "call_started":
                link = self.links.get(str(message["link"]))
                if link is not None and self.call_started is not None:
                    self.call_started(link.session, link.room)
            elif op == "rename":
                self._rename(str(message["link"]), str(message["display_name"]))
            elif op == "close":
                conn = self.remote.get(str(message["link"]))
                if conn is not None:
                    await self._close_remote(conn)
        except Exception:
            log.exception("relay: bad message %r", message)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_CHECK_S)
            if not self.links and not self.remote:
                continue
            try:
                live = await self.cluster.live_node_ids()
            except DiscoError as exc:
                log.warning("relay: cannot check nodes: %s", exc.message)
                continue
            for link in list(self.links.values()):
                if link.host not in live:
                    self._drop(link, tell_host=False)
                    link.session.send({"type": "left", "room": link.room,
                                       "reason": "host_lost"})
            for conn in list(self.remote.values()):
                if conn.origin not in live:
                    await self._close_remote(conn)

    # -- accepting side --------------------------------------------------------------------
    def link_for(self, session: Connection, kind: str, msg: Any) -> Link | None:
        links = self.by_session.get(session)
        if not links:
            return None
        if kind == "volume":
            return next((link for link in links.values()
                         if msg.participant_id in link.others), None)
        room = getattr(msg, "room", None)
        if room is None:
            return next(iter(links.values())) if not session.participants and len(
                links) == 1 else None
        return links.get(room)

    def relayed_rooms(self) -> set[str]:
        """The rooms this node's sessions are in on other nodes."""
        return {link.room for link in self.links.values()}

    def participant_in(self, session: Connection, room: str) -> str | None:
        """This session's participant id in a room relayed to another node."""
        link = self.by_session.get(session, {}).get(room)
        return link.participant_id if link is not None else None

    def open(self, session: Connection, room: str, host: str) -> Link:
        link = Link("l_" + secrets.token_hex(8), session, room, host)
        self.links[link.link_id] = link
        self.by_session.setdefault(session, {})[room] = link
        return link

    def forward(self, link: Link, msg: Any, grant: dict[str, object] | None = None) -> None:
        identity = link.session.identity
        envelope = {
            "op": "msg", "link": link.link_id, "origin": self.node_id,
            "identity": {"subject": identity.subject, "kind": identity.kind,
                         "display_name": link.session.display_name,
                         "expires_at": identity.expires_at},
            "message": msg.model_dump(mode="json"),
        }
        if grant is not None:
            envelope["grant"] = grant
        self.post(topic(link.host), envelope)

    def _drop(self, link: Link, tell_host: bool = True) -> None:
        self.links.pop(link.link_id, None)
        self.dropped[link.link_id] = link
        while len(self.dropped) > DROPPED_LINKS_KEPT:
            del self.dropped[next(iter(self.dropped))]
        links = self.by_session.get(link.session)
        if links is not None and links.get(link.room) is link:
            del links[link.room]
            if not links:
                del self.by_session[link.session]
        if tell_host:
            self.post(topic(link.host), {"op": "close", "link": link.link_id})

    def leave_room(self, session: Connection, room: str) -> bool:
        link = self.by_session.get(session, {}).get(room)
        if link is None:
            return False
        self._drop(link)  # the hosting node closes the link: its participant leaves
        return True

    def session_closed(self, session: Connection) -> None:
        for link in list(self.by_session.get(session, {}).values()):
            self._drop(link)

    def _deliver(self, link_id: str, message: dict[str, Any]) -> None:
        link = self.links.get(link_id)
        if link is None:
            late = self.dropped.get(link_id)
            if late is not None and "id" in message:
                late.session.send(message)  # the reply to a request sent before the drop
            return
        kind = message.get("type")
        if kind == "joined" and message.get("room") == link.room:
            link.participant_id = str(message["participant_id"])
            link.others = {str(p["participant_id"]) for p in message.get("participants", ())}
        elif kind == "participant_joined" and message.get("room") == link.room:
            link.others.add(str(message["participant_id"]))
        elif kind == "participant_left" and message.get("room") == link.room:
            link.others.discard(str(message["participant_id"]))
        elif (kind == "left" and message.get("room") == link.room) or (
            kind == "error" and (link.participant_id is None or message.get("code") == "moved")
        ):
            self._drop(link)  # left, refused, or gone: the next join places the room again
        link.session.send(message)

    # -- hosting side ----------------------------------------------------------------------
    def _host(self, envelope: dict[str, Any]) -> None:
        link_id = str(envelope["link"])
        message = dict(envelope["message"])
        conn = self.remote.get(link_id)
        if conn is None:
            origin = str(envelope["origin"])
            if message.get("type") != "join":
                moved = wire.server_message(
                    "error", message.get("id"), code="moved",
                    message=f"room {message.get('room')} is no longer on node {self.node_id}; "
                            "join it again")
                self.post(topic(origin), {"op": "out", "link": link_id, "message": moved})
                return
            who = envelope["identity"]
            identity = Identity(str(who["subject"]), who["kind"], str(who["display_name"]),
                                int(who["expires_at"]))
            grant = envelope.get("grant")
            conn = RemoteConnection(self, self._state(), link_id, origin, identity,
                                    dict(grant) if isinstance(grant, dict) else None)
            self.remote[link_id] = conn
            conn.worker = asyncio.get_running_loop().create_task(
                self._work(conn), name=f"relay-link-{link_id}")
        try:
            conn.inbox.put_nowait(message)
        except asyncio.QueueFull:
            conn.send(wire.server_message("error", message.get("id"), code="rate_limited",
                                          message="too many messages in flight; slow down"))

    async def _work(self, conn: RemoteConnection) -> None:
        max_bytes = conn.state.settings.max_message_bytes
        while (raw := await conn.inbox.get()) is not None:
            request_id = raw.get("id")
            try:
                msg = wire.parse_client_message(json.dumps(raw), 4 * max_bytes)
                reply = await self.handlers[msg.type](conn, msg)
                if reply is not None:
                    conn.send(wire.server_message(reply.pop("type"), request_id, **reply))
            except wire.WireError as exc:
                conn.send(wire.server_message("error", request_id, code=exc.code,
                                              message=exc.message))
            except DiscoError as exc:
                fields: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if exc.detail:
                    fields["detail"] = exc.detail
                conn.send(wire.server_message("error", request_id, **fields))
            except Exception:
                log.exception("relay: error handling %s for link %s", raw.get("type"),
                              conn.link_id)
                conn.send(wire.server_message("error", request_id, code="internal",
                                              message="the server failed to handle this message"))

    async def drain(self) -> None:
        for conn in list(self.remote.values()):
            for room_id in conn.participants:
                conn.send({"type": "left", "room": room_id, "reason": "host_lost"})
            await self._close_remote(conn)

    def _rename(self, link_id: str, name: str) -> None:
        """The client renamed itself on its node (which checked the name and the limit)."""
        conn = self.remote.get(link_id)
        if conn is None:
            return
        voice.rename(conn, name)

    def renamed(self, session: Connection) -> None:
        """Pass a session's new display name to the rooms relayed for it."""
        for link in self.by_session.get(session, {}).values():
            self.post(topic(link.host), {"op": "rename", "link": link.link_id,
                                         "display_name": session.display_name})

    async def _close_remote(self, conn: RemoteConnection) -> None:
        self.remote.pop(conn.link_id, None)
        if conn.worker is not None:
            await cancel_and_wait(conn.worker)
        for participant in list(conn.participants.values()):
            await conn.rooms.leave(participant)
        conn.participants.clear()


def coalesce(queued: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Queued bus messages, grouped by destination in their order; an ``out`` whose message
    object already goes to that node in an earlier ``out`` joins it (its ``links``), unless
    that would move it ahead of another message for the same link. Pure."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    groups: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}
    """(topic, id(message)) -> (position in its topic's list, the merged envelope)."""
    last: dict[str, int] = {}
    """link -> position of the last envelope naming it."""
    for to, envelope in queued:
        items = by_topic.setdefault(to, [])
        link = envelope.get("link")
        if envelope.get("op") == "out" and isinstance(link, str):
            key = (to, id(envelope["message"]))
            group = groups.get(key)
            if group is not None and last.get(link, -1) < group[0]:
                merged = group[1]
                if "links" not in merged:
                    merged = {"op": "out", "links": [merged["link"]],
                              "message": merged["message"]}
                    items[group[0]] = merged
                    groups[key] = (group[0], merged)
                merged["links"].append(link)
                last[link] = group[0]
                continue
            groups[key] = (len(items), envelope)
        if isinstance(link, str):
            last[link] = len(items)
        items.append(envelope)
    return by_topic


def relaying(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """The session's handlers: room messages go to the room's node when it is elsewhere."""
    out = dict(handlers)
    for kind in RELAYED_TYPES:
        out[kind] = _relayed(kind, handlers[kind])
    rename = handlers["display_name"]

    async def display_name(session: Connection, msg: Any) -> dict[str, Any] | None:
        reply = await rename(session, msg)  # checked and counted here, once
        cast(Relay, session.state.relay).renamed(session)
        return reply

    out["display_name"] = display_name
    return out


def _relayed(kind: str, local: Handler) -> Handler:
    async def handler(session: Connection, msg: Any) -> dict[str, Any] | None:
        relay = cast(Relay, session.state.relay)  # built as a Relay in signaling.app
        link = relay.link_for(session, kind, msg)
        if link is not None:
            relay.forward(link, msg)
            return None
        if kind != "join":
            return await local(session, msg)
        try:
            return await local(session, msg)
        except Elsewhere as exc:
            host = exc.detail.get("node")
            if not host:
                raise
            relay.forward(relay.open(session, msg.room, str(host)), msg, exc.grant)
            return None

    handler.__name__ = f"relayed_{kind}"
    return handler
