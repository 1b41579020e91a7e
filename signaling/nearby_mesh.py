"""Nearby voice across nodes: strangers in range hear each other whichever node they use.

Every node keeps serving the guests that connected to it (the nearby room
stays per node; no relay, no placement): the guests' WebSockets and media stay
where the load balancer put them, so a busy city spreads over every node,
and walking across a partition line changes nothing a client sees. What the
nodes share, through Redis:

- **positions, by partition** (``groups.nearby.partition``, H3 res 5): each
  node announces each of its guests with a fix on the bus topic of the guest's
  partition, ``nearby:<cell>`` (``{"op": "at", "pid", "node", "name",
  "radius_m", "lat", "lon"}``, on every fix or radius change and again every
  ``ANNOUNCE_INTERVAL_S``; ``{"op": "gone", "pid", "node"}`` when the guest
  leaves or changes partition), and listens to every partition within
  ``REACH_M`` of one of its guests. The guests of other nodes heard there
  become ghosts in this node's ``NearbyRoom`` (its proximity index and plan);
  a ghost not announced again within ``GHOST_TTL_S`` (its node died) goes.
- **voice, by node**: each tick the nearby media room hands the frames of its
  own unmuted guests to ``voice_tap``; a guest in range of a ghost
  (``NearbyRoom.piped_to``) has its frame sent, as PCM (``sfu.pipe``), on the
  Redis channel ``<prefix>nearby-voice:<node>`` of each node serving such a
  ghost, one message a tick per node. There the frame feeds a ``PipedSource``
  that the media room mixes as that ghost's voice, by the plan's distance
  gains, never to itself.
- **chat, by node**: a nearby chat message to people who are ghosts here goes
  on the bus topic ``nearby-chat:<node>`` of their node, ``{"to": [pid...],
  "message": {...}}``; that node hands it to each of them who is still its
  guest and still hears the sender.

Pairs are mutual: both nodes compute the same distances from the same
positions, so A hears B on A's node exactly when B hears A on B's node.
Redis pub/sub rather than UDP between nodes: nodes already share Redis (no
new port, address or firewall rule per node pair), frames arrive in order
on one connection, and a node that vanished simply stops receiving; the cost
is one hop through Redis (well under a millisecond here) and its CPU.
Strangers still learn only a display name and a rounded distance: the exact
positions travel between nodes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from common.bus import Subscription
from common.errors import BadRequest
from common.tasks import cancel_and_wait
from groups.geo import haversine_m
from groups.location.fixes import validate_lat_lon
from groups.nearby.partition import REACH_M, partition_of, partitions_near, topic
from protocol.limits import RADIUS_MAX_M, RADIUS_MIN_M
from sfu.errors import BadPipedFrame
from sfu.mixer import Pcm
from sfu.pipe import PipedSource, pack_frame, unpack_frames
from signaling.nearby import NEARBY_ROOM, Ghost, NearbyRoom
from signaling.rooms import Participant

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from common.bus import RedisBus
    from sfu.room import MediaRoom

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL_S = 1.0
"""Every guest with a fix is announced again this often (late listeners, lost messages)."""
GHOST_TTL_S = 5.0
"""A ghost not announced for this long is dropped (its node died or lost Redis)."""
VOICE_QUEUE_TICKS = 10
"""Ticks of outgoing frames held while Redis is slow; beyond, the oldest tick's go."""
INTEREST_SLACK_M = 1_000.0
"""A guest's partitions near are computed this much wider, and again once it has moved
this far (metres) or changed partition."""
NAME_MAX_CHARS = 64
RECONNECT_S = 1.0


GHOSTS = Gauge("disco_nearby_ghosts", "Guests of other nodes mirrored here (near our guests)")
PIPED_OUT = Counter("disco_nearby_piped_frames_out_total",
                    "Voice frames of our guests sent to other nodes (one per frame and node)")
PIPED_IN = Counter("disco_nearby_piped_frames_in_total",
                   "Voice frames of other nodes' guests received for a ghost here")
PIPE_DROPPED = Counter("disco_nearby_pipe_dropped_total",
                       "Ticks of outgoing voice not piped (Redis slow or away)")


def voice_channel(prefix: str, node_id: str) -> str:
    return f"{prefix}nearby-voice:{node_id}"


def chat_topic(node_id: str) -> str:
    return f"nearby-chat:{node_id}"


class NearbyMesh:
    """This node's side of nearby across nodes: announce, listen, pipe voice."""

    def __init__(self, node_id: str, nearby: NearbyRoom, bus: RedisBus, redis: aioredis.Redis,
                 prefix: str, clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.nearby = nearby
        self.bus = bus
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self._subscription: Subscription = bus.subscription()
        self._chat: Subscription = bus.subscription()
        self._interest: dict[str, frozenset[str]] = {}
        """Local guest -> the partitions near it (this node listens to their union)."""
        self._home: dict[str, str] = {}
        self._interest_at: dict[str, tuple[float, float]] = {}
        """Where each guest's partitions near were last computed."""
        self._names: dict[str, Participant] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        """Announcements to publish (topic -> message), latest per guest and topic."""
        self._wake = asyncio.Event()
        self._seq: dict[str, int] = {}
        self._voice_out: asyncio.Queue[list[tuple[str, bytes]]] = asyncio.Queue(VOICE_QUEUE_TICKS)
        self._sources: dict[str, PipedSource] = {}
        self._heard: dict[str, tuple[str, str, str, float, float, float]] = {}
        """Ghost -> its last announcement (topic, node, name, radius, lat, lon)."""
        self._media: MediaRoom | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.voice_dropped = 0
        nearby.on_local_fix.append(self._local_fix)
        nearby.on_local_leave.append(self._local_leave)
        nearby.on_media.append(self._media_started)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._announce(), name="nearby-announce"),
            loop.create_task(self._read_positions(), name="nearby-positions"),
            loop.create_task(self._write_voice(), name="nearby-voice-out"),
            loop.create_task(self._read_voice(), name="nearby-voice-in"),
            loop.create_task(self._read_chat(), name="nearby-chat-in"),
        ]
        await self._chat.add(chat_topic(self.node_id))

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await self._subscription.close()
        await self._chat.close()

    # -- positions out ---------------------------------------------------------------------
    def _local_fix(self, participant: Participant, lat: float, lon: float) -> None:
        pid = participant.participant_id
        self._names[pid] = participant
        home = partition_of(lat, lon)
        old = self._home.get(pid)
        if old is not None and old != home:
            self._pending[f"{topic(old)}|{pid}"] = {"topic": topic(old), "op": "gone",
                                                    "pid": pid, "node": self.node_id}
        self._home[pid] = home
        at = self._interest_at.get(pid)
        if old != home or at is None or haversine_m(lat, lon, *at) > INTEREST_SLACK_M:
            # ~130 us: computed with slack, so a guest strolling within its partition
            # reuses it (any partition within REACH_M now was within REACH_M + slack there)
            self._interest[pid] = partitions_near(lat, lon, REACH_M + INTEREST_SLACK_M)
            self._interest_at[pid] = (lat, lon)
        self._pending[f"{topic(home)}|{pid}"] = self._at(participant, home, lat, lon)
        self._wake.set()

    def _at(self, participant: Participant, home: str, lat: float, lon: float) -> dict[str, Any]:
        return {"topic": topic(home), "op": "at", "pid": participant.participant_id,
                "node": self.node_id, "name": participant.peer.display_name,
                "radius_m": participant.radius_m, "lat": lat, "lon": lon}

    def _local_leave(self, participant: Participant) -> None:
        pid = participant.participant_id
        self._names.pop(pid, None)
        self._interest.pop(pid, None)
        self._interest_at.pop(pid, None)
        self._seq.pop(pid, None)
        home = self._home.pop(pid, None)
        for key in [k for k, m in self._pending.items()
                    if k.endswith("|" + pid) and m["op"] == "at"]:
            del self._pending[key]  # (a pending "gone" from a partition it left still goes)
        if home is not None:
            self._pending[f"{topic(home)}|{pid}"] = {"topic": topic(home), "op": "gone",
                                                     "pid": pid, "node": self.node_id}
        self._wake.set()

    async def _announce(self) -> None:
        """Follow the partitions near our guests; publish announcements; renew them all
        every ``ANNOUNCE_INTERVAL_S``; expire silent ghosts."""
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))
            self._wake.clear()
            if loop.time() >= next_round:
                next_round = loop.time() + ANNOUNCE_INTERVAL_S
                self._renew_all()
                self._expire_ghosts()
            try:
                await self._follow_partitions()
                pending, self._pending = self._pending, {}
                # every "at" before any "gone": a guest that changed partition is filed
                # under the new one before the old one lets go, so no node drops it between
                for message in sorted(pending.values(), key=lambda m: m["op"] == "gone"):
                    await self.bus.publish(message.pop("topic"), message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next round announces again
                log.warning("nearby: cannot announce positions now: %s", exc)

    def _renew_all(self) -> None:
        for pid, participant in self._names.items():
            fix = self.nearby.fix_of(pid)
            home = self._home.get(pid)
            if fix is not None and home is not None:
                self._pending.setdefault(f"{topic(home)}|{pid}",
                                         self._at(participant, home, *fix))

    def _expire_ghosts(self) -> None:
        cutoff = self.clock() - GHOST_TTL_S
        for pid in [p for p, g in self.nearby.ghosts.items() if g.seen_at < cutoff]:
            self._drop_ghost(pid)

    async def _follow_partitions(self) -> None:
        wanted = {topic(cell) for cells in self._interest.values() for cell in cells}
        have = set(self._subscription.topics)
        if wanted - have:
            await self._subscription.add(*sorted(wanted - have))
        if have - wanted:
            await self._subscription.remove(*sorted(have - wanted))
            # ghosts only heard on partitions we left lapse by GHOST_TTL_S

    # -- positions in ----------------------------------------------------------------------
    async def _read_positions(self) -> None:
        async for where, message in self._subscription:
            if message.get("node") == self.node_id:
                continue
            try:
                self._position(where, message)
            except (BadRequest, KeyError, TypeError, ValueError) as exc:
                log.warning("nearby: ignoring a bad announcement %r: %s", message, exc)

    def _position(self, where: str, message: Mapping[str, Any]) -> None:
        """An announcement heard on partition topic ``where``."""
        pid, node = str(message["pid"]), str(message["node"])
        if message.get("op") == "gone":
            ghost = self.nearby.ghosts.get(pid)
            heard = self._heard.get(pid)
            # only from the partition it was last announced on: after a move, the new
            # partition's "at" came first and this "gone" is for the old one
            if ghost is not None and ghost.node == node and heard is not None and (
                    heard[0] == where):
                self._drop_ghost(pid)
            return
        if message.get("op") != "at":
            raise ValueError("unknown op")
        lat, lon = message["lat"], message["lon"]
        validate_lat_lon(lat, lon)
        radius = float(message["radius_m"])
        if not (math.isfinite(radius) and RADIUS_MIN_M <= radius <= RADIUS_MAX_M):
            raise ValueError(f"radius {radius} out of range")
        name = str(message["name"])[:NAME_MAX_CHARS]
        if not pid or len(pid.encode()) > 64:
            raise ValueError("bad participant id")
        heard = (where, node, name, radius, float(lat), float(lon))
        ghost = self.nearby.ghosts.get(pid)
        before = self._heard.get(pid)
        if ghost is not None and before is not None and before[:2] + before[3:] == (
                heard[:2] + heard[3:]):
            ghost.seen_at = self.clock()  # a renewal: nothing moved, nothing to recompute
            if name != ghost.display_name:  # renamed on its node: tell those who hear it
                ghost.display_name = name
                self._heard[pid] = heard
                self.nearby.rooms.broadcast(NEARBY_ROOM, {
                    "type": "participant_renamed", "room": NEARBY_ROOM, "participant_id": pid,
                    "display_name": name}, about=pid)
            return
        self._heard[pid] = heard
        self.nearby.place_ghost(Ghost(pid, node, name, radius, self.clock()), lat, lon)
        GHOSTS.set(len(self.nearby.ghosts))

    def _drop_ghost(self, pid: str) -> None:
        self._heard.pop(pid, None)
        self.nearby.drop_ghost(pid)
        GHOSTS.set(len(self.nearby.ghosts))
        if self._sources.pop(pid, None) is not None and self._media is not None:
            self._media.remove_source(pid)

    # -- chat ------------------------------------------------------------------------------
    async def send_chat(self, recipients: Collection[str], message: dict[str, Any]) -> None:
        """Pass a nearby chat message to the recipients who are ghosts here, by their node."""
        by_node: dict[str, list[str]] = {}
        for pid in recipients:
            ghost = self.nearby.ghosts.get(pid)
            if ghost is not None:
                by_node.setdefault(ghost.node, []).append(pid)
        for node, pids in sorted(by_node.items()):
            await self.bus.publish(chat_topic(node), {"to": sorted(pids), "message": message})

    async def _read_chat(self) -> None:
        async for _topic, envelope in self._chat:
            try:
                self._chat_in(envelope)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("nearby: ignoring a bad chat envelope: %s", exc)

    def _chat_in(self, envelope: Mapping[str, Any]) -> None:
        message = dict(envelope["message"])
        sender = str(message["from"])
        room = self.nearby.rooms.get(NEARBY_ROOM)
        if room is None or message.get("type") != "chat" or message.get("room") != NEARBY_ROOM:
            return
        for pid in envelope["to"]:
            participant = room.participants.get(str(pid))
            if participant is not None and sender in self.nearby.hearers(str(pid)):
                participant.peer.send(message)

    # -- voice -----------------------------------------------------------------------------
    def _media_started(self, media: MediaRoom) -> None:
        self._media = media
        self._sources = {}
        media.voice_tap = self._tap

    def _tap(self, frames: Mapping[str, Pcm]) -> None:
        """In the tick: queue the frames of guests some other node's guest can hear."""
        by_node: dict[str, list[bytes]] = {}
        for pid, pcm in frames.items():
            nodes = self.nearby.piped_to(pid)
            if not nodes:
                continue
            seq = self._seq.get(pid, 0)
            self._seq[pid] = seq + 1
            data = pack_frame(pid, seq, pcm)
            for node in nodes:
                by_node.setdefault(node, []).append(data)
        if not by_node:
            return
        # one message a tick per node: its frames back to back (``sfu.pipe.unpack_frames``)
        out = [(voice_channel(self.prefix, node), b"".join(parts))
               for node, parts in by_node.items()]
        PIPED_OUT.inc(sum(len(parts) for parts in by_node.values()))
        if self._voice_out.full():
            self._voice_out.get_nowait()
            self.voice_dropped += 1
            PIPE_DROPPED.inc()
        self._voice_out.put_nowait(out)

    async def _write_voice(self) -> None:
        while True:
            batch = await self._voice_out.get()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.voice_dropped += 1
                PIPE_DROPPED.inc()
                log.debug("nearby: voice frames not piped: %s", exc)

    async def _read_voice(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(voice_channel(self.prefix, self.node_id))
                async for raw in pubsub.listen():
                    if raw.get("type") == "message":
                        self._voice(raw["data"], loop.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("nearby: voice pipe lost Redis (%s); again in %.0f s", exc,
                            RECONNECT_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_S)

    def _voice(self, data: bytes, now: float) -> None:
        try:
            frames = unpack_frames(data)
        except BadPipedFrame as exc:
            log.warning("nearby: dropping a bad piped frame: %s", exc.message)
            return
        media = self._media
        if media is None:
            return  # no one here to hear it (yet)
        for frame in frames:
            if frame.speaker not in self.nearby.ghosts:
                continue  # its ghost has gone
            source = self._sources.get(frame.speaker)
            if source is None:
                source = self._sources[frame.speaker] = PipedSource()
                media.add_source(frame.speaker, source)
            source.push(frame.seq, frame.pcm, now)
            PIPED_IN.inc()
