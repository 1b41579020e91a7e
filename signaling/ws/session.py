"""One WebSocket connection: authenticate, then read, dispatch and reply.

The session owns the connection's rooms and its bus subscription. Replies go
through ``send``, which never blocks: a bounded outbox drained by a writer
task; a client too slow to drain it is disconnected rather than let memory
grow. Errors become ``{"type": "error", ...}`` messages and the connection
stays open; only a bad, expired or revoked token (account deleted, password
changed: an ``account`` event on the bus, on every node) closes it (code 4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from billing.service import entitlements_for_group
from common.bus import Subscription
from common.errors import BadRequest, DiscoError, Elsewhere, Forbidden, RateLimited, Unauthorized
from common.ids import parse_id
from common.logbudget import LogBudget
from common.tasks import cancel_and_wait
from groups import service
from groups.accounts import clean_display_name, current_user
from groups.nearby import proximity
from protocol import wire
from signaling import push_hooks
from signaling.auth import Identity
from signaling.deps import AppState
from signaling.edge_errors import WS_CLOSE_UNAUTHORIZED
from signaling.nearby import NEARBY_ROOM
from signaling.rooms import Participant, RoomRegistry
from signaling.turn import ice_servers
from signaling.ws import chat as handlers_chat
from signaling.ws import location as handlers_location
from signaling.ws import voice
from signaling.ws.connection import participant_in
from signaling.ws.relay import relaying

log = logging.getLogger(__name__)

OUTBOX_MAX_MESSAGES = 512
DEFAULT_RADIUS_M = 500.0
DISPLAY_NAME_CHANGES_PER_SESSION = 3
# Bus messages a session passes on to its client as they are.
FORWARDED_EVENTS = frozenset(
    {"member_location", "place_event", "place_changed", "sos", "chat", "member_sharing",
     "membership"}
)

# Tracebacks a client can put in the log: a few per connection, and a few a
# minute for the whole process (a client could otherwise reconnect for more).
CONNECTION_LOG_BURST = 3
CONNECTION_LOG_INTERVAL_S = 600.0
PROCESS_LOG_BURST = 20
PROCESS_LOG_INTERVAL_S = 60.0
_PROCESS_LOG_BUDGET = LogBudget(PROCESS_LOG_BURST, PROCESS_LOG_INTERVAL_S)

Handler = Callable[["ClientSession", Any], Awaitable[dict[str, Any] | None]]


class ClientSession:
    def __init__(self, state: AppState, websocket: WebSocket, identity: Identity) -> None:
        self.state = state
        self.rooms: RoomRegistry = state.rooms
        self.websocket = websocket
        self.identity = identity
        self.subject = identity.subject
        self.display_name = identity.display_name
        self.participants: dict[str, Participant] = {}
        self.subscription: Subscription = state.bus.subscription()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_MAX_MESSAGES)
        self.closed = False
        self.last_fix: tuple[float, float] | None = None
        """The last (lat, lon) this connection sent: a fix sent before joining nearby counts."""
        self.renames = 0
        """Display-name changes on this connection (limited per session)."""
        self.log_budget = LogBudget(CONNECTION_LOG_BURST, CONNECTION_LOG_INTERVAL_S)

    # -- outbound -----------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("closing %s: client does not read its messages", self.subject)
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.get_nowait()
                self.outbox.put_nowait(None)

    def error(self, code: str, message: str, request_id: wire.RequestId | None,
              detail: dict[str, object] | None = None) -> None:
        fields: dict[str, Any] = {"code": code, "message": message}
        if detail:
            fields["detail"] = detail
        self.send(wire.server_message("error", request_id, **fields))

    async def _writer(self) -> None:
        while (message := await self.outbox.get()) is not None:
            await self.websocket.send_text(wire.encode(message))
        await self.websocket.close(1008, "too slow")

    async def _bus_reader(self) -> None:
        async for _topic, event in self.subscription:
            if event.get("type") == "account" and self._revoked_by(event):
                await self._close_revoked(str(event.get("reason") or "token revoked"))
                return
            if event.get("type") == "membership" and event.get("user_id") == self.identity.user_id:
                await self._membership_changed(event)
            if event.get("type") not in FORWARDED_EVENTS:
                continue
            own = event.get("user_id") == self.identity.user_id
            if own and event.get("type") == "member_location":
                continue  # your own position, echoed by the bus
            if event.get("type") == "chat" and not self._reads_chat(event):
                continue
            self.send(event)

    def _revoked_by(self, event: dict[str, Any]) -> bool:
        """An ``account`` event (deletion, password change) that ends this token."""
        if event.get("user_id") != self.identity.user_id or self.identity.user_id is None:
            return False
        generation = event.get("token_gen")
        return generation is None or self.identity.generation < int(generation)

    async def _close_revoked(self, reason: str) -> None:
        self.closed = True
        with contextlib.suppress(RuntimeError):
            await self.websocket.close(WS_CLOSE_UNAUTHORIZED, reason[:120])

    def _reads_chat(self, event: dict[str, Any]) -> bool:
        """A group room's chat reaches sessions in that room, except the sender's own."""
        room = str(event.get("room"))
        participant = self.participants.get(room)
        mine = (participant.participant_id if participant is not None
                else self.state.relay.participant_in(self, room))
        return mine is not None and event.get("from") != mine

    async def _membership_changed(self, event: dict[str, Any]) -> None:
        group_id = int(event["group_id"])
        if event.get("change") == "joined":
            await self.subscription.add(f"group:{group_id}")
            return
        if event.get("change") != "left":  # "role": still a member, nothing to undo
            return
        await self.subscription.remove(f"group:{group_id}")
        participant = self.participants.pop(f"group:{group_id}", None)
        if participant is not None:
            await self.rooms.leave(participant)
            self.send({"type": "left", "room": participant.room_id, "reason": "membership"})
        elif self.state.relay.leave_room(self, f"group:{group_id}"):
            self.send({"type": "left", "room": f"group:{group_id}", "reason": "membership"})

    # -- lifecycle ----------------------------------------------------------
    async def run(self) -> None:
        settings = self.state.settings
        now = self.state.clock()
        if self.identity.user_id is not None:
            await self.subscription.add(f"user:{self.identity.user_id}")
            async with self.state.sessions() as db:
                for group, _role in await service.my_groups(db, self.identity.user_id):
                    await self.subscription.add(f"group:{group.id}")
        self.send({
            "type": "welcome",
            "protocol": wire.PROTOCOL_VERSION,
            "user": {"id": self.identity.user_id or self.subject, "kind": self.identity.kind,
                     "display_name": self.display_name},
            "ice_servers": ice_servers(
                settings.stun_urls, settings.turn_urls, settings.turn_secret, self.subject, now,
                settings.turn_ttl_s,
            ),
            "max_message_bytes": settings.max_message_bytes,
            "node": settings.node_id,
        })
        tasks = [
            asyncio.create_task(self._writer(), name=f"ws-writer-{self.subject}"),
            asyncio.create_task(self._bus_reader(), name=f"ws-bus-{self.subject}"),
        ]
        try:
            await self._read_loop()
        finally:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(None)
            await self.subscription.close()
            self.state.relay.session_closed(self)
            for participant in list(self.participants.values()):
                await self.rooms.leave(participant)
            self.participants.clear()
            await cancel_and_wait(*tasks)

    async def _read_loop(self) -> None:
        max_bytes = self.state.settings.max_message_bytes
        while not self.closed:
            try:
                frame = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if frame["type"] == "websocket.disconnect":
                return
            if self.identity.expires_at <= self.state.clock():
                self.closed = True
                await self.websocket.close(WS_CLOSE_UNAUTHORIZED, "token expired")
                return
            raw = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
            request_id: wire.RequestId | None = None
            try:
                message = wire.parse_client_message(raw or "", max_bytes)
                request_id = message.id
                reply = await SESSION_HANDLERS[message.type](self, message)
                if reply is not None:
                    self.send(wire.server_message(reply.pop("type"), request_id, **reply))
            except wire.WireError as exc:
                self.error(exc.code, exc.message, exc.request_id)
            except DiscoError as exc:
                self.error(exc.code, exc.message, request_id, exc.detail)
            except Exception:
                self._log_failure(request_id)
                self.error("internal", "the server failed to handle this message", request_id)

    def _log_failure(self, request_id: wire.RequestId | None) -> None:
        """Log the exception being handled, within this connection's and the process's budget."""
        now = time.monotonic()
        mine = self.log_budget.allow(now)
        everyone = _PROCESS_LOG_BUDGET.allow(now) if mine is not None else None
        if mine is None or everyone is None:
            return
        log.exception("error handling a message (id %r) from %s (not logged since: %d from "
                      "this connection, %d in all)", request_id, self.subject, mine, everyone)

    # -- helpers ------------------------------------------------------------
    def participant(self, room: str | None) -> Participant:
        """The participant for ``room``, or for the only room joined if None."""
        return participant_in(self.participants, room)


# -- handlers: one per client message type -----------------------------------


async def on_ping(session: ClientSession, msg: wire.Ping) -> dict[str, Any]:
    return {"type": "pong", "server_time": session.state.clock()}


async def on_join(session: ClientSession, msg: wire.Join) -> dict[str, Any]:
    room_id = msg.room
    voice.check_not_in(session, room_id)
    music_allowed = False
    group_id: int | None = None
    if room_id == NEARBY_ROOM:
        radius = msg.radius_m or DEFAULT_RADIUS_M
        await nearby_kernels()
    elif room_id.startswith("group:") and room_id[6:].isascii() and room_id[6:].isdigit():
        if session.identity.user_id is None:
            raise Forbidden("guest sessions can only join the nearby room")
        group_id = parse_id(room_id[6:], "group")  # NotFound past ID_MAX
        async with session.state.sessions() as db:
            await service.require_member(db, group_id, session.identity.user_id)
            music_allowed = await _music_allowed(session.state, db, group_id)
        radius = None
    else:
        raise BadRequest("room must be 'group:<id>' or 'nearby'")
    # A group room is placed on one node of the deployment: joined here only if it is here.
    try:
        reply, first = await voice.enter(session, room_id, radius, music_allowed)
    except Elsewhere as exc:
        exc.grant = {"music_allowed": music_allowed}  # relayed with the join (ws.relay)
        raise
    if room_id == NEARBY_ROOM and session.last_fix is not None:
        session.state.nearby.move(session.participants[room_id], *session.last_fix)
    if group_id is not None and first:
        # In the background: awaiting here would let another member's
        # participant_joined overtake this joined reply.
        assert session.identity.user_id is not None
        session.state.spawn(
            push_hooks.call_started(session.state, group_id, session.identity.user_id,
                                    present=()),
            name=f"push-call-{room_id}",
        )
    return reply


async def nearby_kernels() -> None:
    """The nearby index's compiled kernels, loaded on this node's first nearby join.

    In a thread (numba's import and cache load take ~1 s; a first start that
    beat the helper process to the cache compiles for ~9 s), so the event
    loop keeps mixing meanwhile; a voice node with no nearby guests never
    loads numba (~150 MB).
    """
    if proximity.is_warm():
        return
    took = await asyncio.to_thread(proximity.ensure_warm)
    if took:
        log.info("nearby index loaded in %.1f s", took)
        gc.freeze()  # like the start-up objects (signaling.cli): there for good, out of the GC


async def _music_allowed(state: AppState, db: Any, group_id: int) -> bool:
    return bool((await entitlements_for_group(db, group_id, state.clock(), state.plans)).music)


async def on_display_name(session: ClientSession, msg: wire.DisplayName) -> dict[str, Any]:
    """Rename yourself in your rooms (at most three times per connection)."""
    changes = session.renames
    if changes >= DISPLAY_NAME_CHANGES_PER_SESSION:
        raise RateLimited(
            f"display names can change at most {DISPLAY_NAME_CHANGES_PER_SESSION} times "
            "per session"
        )
    name = clean_display_name(msg.display_name)
    session.renames = changes + 1
    voice.rename(session, name)
    return {"type": "display_name", "display_name": name,
            "changes_left": DISPLAY_NAME_CHANGES_PER_SESSION - changes - 1}


HANDLERS: dict[str, Handler] = {
    "ping": on_ping,
    "join": on_join,
    **voice.ROOM_HANDLERS,
    "location": handlers_location.on_location,
    "radius": handlers_location.on_radius,
    "chat": handlers_chat.on_chat,
    "sos": handlers_location.on_sos,
    "display_name": on_display_name,
}


SESSION_HANDLERS: dict[str, Handler] = relaying(HANDLERS)
"""What a client's session runs: a group room hosted elsewhere is relayed (``ws.relay``)."""


async def serve_websocket(state: AppState, websocket: WebSocket) -> None:
    """The ``/ws`` endpoint: check the token, then run a session."""
    await websocket.accept()
    token = websocket.query_params.get("token", "")
    try:
        identity = state.signer.verify(token, state.clock())
        if identity.user_id is not None:
            async with state.sessions() as db:
                await current_user(db, identity.user_id, identity.generation)
    except Unauthorized as exc:
        await websocket.send_text(json.dumps(
            {"type": "error", "code": "unauthorized", "message": exc.message}
        ))
        await websocket.close(WS_CLOSE_UNAUTHORIZED, exc.message[:120])
        return
    await ClientSession(state, websocket, identity).run()
