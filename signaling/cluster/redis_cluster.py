"""The cluster over one shared Redis: every key under the deployment's prefix.

Keys (``P`` is ``DISCO_REDIS_PREFIX``):

- ``P node:<id>``: the node's heartbeat (``NodeInfo`` as JSON), rewritten
  every ``HEARTBEAT_INTERVAL_S`` with a ``HEARTBEAT_EXPIRY_S`` expiry: a node
  killed with -9 vanishes within the expiry. ``P nodes`` is the set of ids.
- ``P room:<room id>``: the node hosting the room. Written only by the claim
  script (a live holder stays; otherwise the proposal is written: one atomic
  step, so two nodes claiming at once agree), renewed by its holder every
  heartbeat while it hosts the room, deleted only by its holder (compare and
  delete) when the room empties here. Another node's timeout can never delete
  a room it does not serve, and a holder that dies stops renewing: its rooms
  are free once its heartbeat has expired, without waiting for the claim's TTL.
- ``P once:<key>``: ``once`` (SET NX PX).

Redis and memory cannot drift apart for long: every heartbeat re-asserts the
claim of each room this node hosts (taking it back if it lapsed).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from common.errors import Unavailable
from common.tasks import cancel_and_wait
from signaling.cluster import placement
from signaling.cluster.base import elsewhere
from signaling.cluster.placement import NodeInfo
from signaling.rooms import Participant, RoomRegistry

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

T = TypeVar("T")

PLACED_PREFIX = "group:"
"""Rooms placed across nodes; the nearby room stays on each node for now."""

# KEYS[1] room key; ARGV: proposed holder, claim TTL ms, node key prefix.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
  if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return holder
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""
# KEYS[1] room key; ARGV: this node, claim TTL ms, node key prefix. 1: held, 0: another holds it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[1] room key; ARGV[1] this node. Deletes only its own claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCluster:
    """Nodes of one deployment meeting in Redis (``DISCO_REDIS_URL``, ``DISCO_REDIS_PREFIX``)."""

    def __init__(self, node_id: str, redis: aioredis.Redis, prefix: str, rooms: RoomRegistry,
                 clock: Callable[[], float], *, capacity: int = 60, node_url: str = "",
                 media_address: str = "", region: str = "", role: str = placement.ROLE_FULL,
                 heartbeat_interval_s: float = placement.HEARTBEAT_INTERVAL_S,
                 heartbeat_expiry_s: float = placement.HEARTBEAT_EXPIRY_S,
                 claim_ttl_s: float = placement.CLAIM_TTL_S) -> None:
        """``redis`` is the node's client for keys, shared with its rate limits; its owner
        (the composition root) closes it after ``close``."""
        self.node_id = node_id
        self.prefix = prefix
        self.redis = redis
        self.rooms = rooms
        self.clock = clock
        self.capacity = capacity
        self.node_url = node_url
        self.media_address = media_address
        self.region = region
        self.role = role
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_expiry_s = heartbeat_expiry_s
        self.claim_ttl_s = claim_ttl_s
        self.held: set[str] = set()
        """Rooms this node holds the claim of (what it releases when it stops)."""
        self._rng = random.Random()
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._heartbeat: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()

    # -- keys ------------------------------------------------------------------
    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _room_key(self, room_id: str) -> str:
        return f"{self.prefix}room:{room_id}"

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        from redis.exceptions import RedisError

        try:
            await self.redis.ping()
            await self.beat()
        except RedisError as exc:
            raise Unavailable(f"Redis at DISCO_REDIS_URL is unreachable: {exc}") from exc
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")

    async def drain(self) -> None:
        """Stop beating, leave the registry and release every room held here.

        From here on no node places a room here, and the nodes relaying to this
        one see it gone at their next check (within ``LIVENESS_CHECK_S``).
        """
        from redis.exceptions import RedisError

        await cancel_and_wait(self._heartbeat, *self._releases)
        self._heartbeat = None
        try:
            await self.redis.delete(self._node_key(self.node_id))
            await self.redis.srem(f"{self.prefix}nodes", self.node_id)
            for room_id in list(self.held):
                await self.release(room_id)
        except RedisError as exc:
            log.warning("could not deregister node %s: %s (it expires on its own)",
                        self.node_id, exc)

    async def close(self) -> None:
        await self.drain()

    # -- heartbeat -------------------------------------------------------------------
    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, self.rooms.participant_count(), self.capacity,
                        self.clock(), url=self.node_url, media_address=self.media_address,
                        region=self.region, role=self.role)

    async def beat(self) -> None:
        """Write this node's heartbeat and re-assert the claim of every room it hosts."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(self.node_id), self.info().to_json(),
                     px=round(self.heartbeat_expiry_s * 1000))
            pipe.sadd(f"{self.prefix}nodes", self.node_id)
            await pipe.execute()
        ttl_ms = round(self.claim_ttl_s * 1000)
        for room in self.rooms.rooms():
            if not room.room_id.startswith(PLACED_PREFIX) or not room.participants:
                continue
            ours = await self._renew(keys=[self._room_key(room.room_id)],
                                     args=[self.node_id, ttl_ms, self._node_key("")])
            if ours:
                self.held.add(room.room_id)
            else:
                self.held.discard(room.room_id)
                await self.yield_room(room.room_id)

    async def yield_room(self, room_id: str) -> None:
        """Another live node holds the claim of a room that also has participants here
        (placed while Redis was away, say): the claim is the truth, so this node's side
        of the split goes. Its participants get ``left`` (``moved``) and join again,
        which takes them (relayed) to the holder: one call again."""
        room = self.rooms.get(room_id)
        if room is None:
            return
        log.warning("room %s is held by another node: moving its %d participants there",
                    room_id, len(room.participants))
        for participant in list(room.participants.values()):
            participant.peer.send({"type": "left", "room": room_id, "reason": "moved"})
            await self.rooms.leave(participant)

    async def _beat_forever(self) -> None:
        from redis.exceptions import RedisError

        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self.beat()
            except RedisError as exc:
                log.warning("heartbeat failed (Redis unreachable?): %s", exc)

    async def nodes(self) -> list[NodeInfo]:
        """Every registered node's last heartbeat (dead ones' keys have expired)."""
        ids = sorted(_text(m) for m in await self.redis.smembers(f"{self.prefix}nodes"))
        if not ids:
            return []
        found: list[NodeInfo] = []
        gone: list[str] = []
        for node_id, raw in zip(ids, await self.redis.mget([self._node_key(i) for i in ids]),
                                strict=True):
            if raw is None:
                gone.append(node_id)
                continue
            try:
                found.append(NodeInfo.from_json(raw))
            except ValueError as exc:
                log.warning("ignoring node %s: %s", node_id, exc)
        if gone:
            await self.redis.srem(f"{self.prefix}nodes", *gone)
        return found

    async def live_node_ids(self) -> set[str]:
        from redis.exceptions import RedisError

        try:
            nodes = await self.nodes()
        except RedisError as exc:
            raise Unavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
        return set(placement.live_nodes(nodes, self.clock(), self.heartbeat_expiry_s))

    # -- placement ---------------------------------------------------------------------
    async def place(self, room_id: str) -> NodeInfo:
        from redis.exceptions import RedisError

        try:
            nodes = await self.nodes()
            holder_raw = await self.redis.get(self._room_key(room_id))
            holder = _text(holder_raw) if holder_raw is not None else None
            chosen = placement.place(holder, nodes, self.clock(), self._rng,
                                     prefer=self.node_id,
                                     expiry_s=self.heartbeat_expiry_s)
            if chosen is None:
                raise Unavailable("every node is full or unreachable; try again shortly",
                                  detail={"room": room_id})
            settled = await self._claim(
                keys=[self._room_key(room_id)],
                args=[chosen.node_id, round(self.claim_ttl_s * 1000), self._node_key("")],
            )
        except RedisError as exc:
            raise Unavailable(f"the cluster store (Redis) is unreachable: {exc}",
                              detail={"room": room_id}) from exc
        hosting = _text(settled)
        if hosting == self.node_id:
            self.held.add(room_id)
            return self.info()
        by_id = {n.node_id: n for n in nodes}
        return by_id.get(hosting) or NodeInfo(hosting, 0, 1, self.clock())

    async def admit(self, room_id: str, join: Callable[[], Awaitable[T]]) -> T:
        """Run ``join`` if ``room_id`` is (or now gets) placed here; else raise ``Elsewhere``.

        Placement and the join run under this node's placement lock, as does
        the release of an emptied room: a release never deletes the claim of
        a room a join is entering.
        """
        if not room_id.startswith(PLACED_PREFIX):
            return await join()
        async with self._lock:
            hosting = await self.place(room_id)
            if hosting.node_id != self.node_id:
                raise elsewhere(room_id, hosting)
            return await join()

    async def release(self, room_id: str) -> bool:
        """Delete the room's claim if (and only if) this node holds it."""
        self.held.discard(room_id)
        return bool(await self._release(keys=[self._room_key(room_id)], args=[self.node_id]))

    def participant_left(self, participant: Participant) -> None:
        if not participant.room_id.startswith(PLACED_PREFIX):
            return
        room = self.rooms.get(participant.room_id)
        if room is not None and room.participants:
            return
        task = asyncio.get_running_loop().create_task(
            self._release_if_empty(participant.room_id), name=f"release-{participant.room_id}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release_if_empty(self, room_id: str) -> None:
        from redis.exceptions import RedisError

        async with self._lock:
            room = self.rooms.get(room_id)
            if room is not None and room.participants:
                return  # someone joined again meanwhile: keep it
            try:
                await self.release(room_id)
            except RedisError as exc:
                log.warning("could not release room %s (its claim will lapse): %s", room_id, exc)

    # -- once ------------------------------------------------------------------------------
    async def once(self, key: str, ttl_s: float) -> bool:
        """One atomic SET NX PX: exactly one caller wins, whichever node it runs on."""
        from redis.exceptions import RedisError

        try:
            won = await self.redis.set(f"{self.prefix}once:{key}", self.node_id, nx=True,
                                       px=max(1, round(ttl_s * 1000)))
        except RedisError as exc:
            log.warning("Redis unavailable for once(%s): %s; treating it as done", key, exc)
            return False
        return bool(won)
