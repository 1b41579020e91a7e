"""``disco media``: a media node, which hosts group rooms' calls and does nothing else.

A whole node (``disco serve``) carries the REST API, the WebSockets, the
database and the web client, and hosts rooms too. A media node only hosts
rooms: no HTTP, no database, no ORM, no FastAPI, so it starts lighter (idle
RSS: ``python -m bench.cluster --rss``) and spends its core on audio. It
meets the whole nodes in Redis (``DISCO_REDIS_URL``, required) like any node,
with the role ``media`` in its heartbeat, and new group rooms are placed on
media nodes while one of them has capacity (``signaling.cluster.placement``).

Clients never connect to it. Their node relays the room's messages here
(``signaling.ws.relay``), as it does for a room on another whole node; the
SDP answers and ICE candidates come from here, so the media flows straight
to this node. What needs the database is done on the client's node before
the join is relayed (membership, the group's music entitlement: the join's
*grant*) or after (the "call started" push, on ``call_started``); plan
changes arrive as bus notices (``signaling.live_music``). The one
exception is an uploaded music track not yet in this node's folder: it is
read from the database (``DISCO_DATABASE_URL``) when first played here, which
loads the ORM then (``DatabaseUploads``).

``disco serve --workers N --media-workers M`` runs M of these beside N whole
nodes on one machine (``signaling.workers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.bus import RedisBus
from common.process import freeze_startup_objects
from common.settings import Settings
from common.tasks import cancel_and_wait
from groups.chat import ChatLog
from signaling import live_music
from signaling.cluster.placement import ROLE_MEDIA
from signaling.cluster.redis_cluster import RedisCluster
from signaling.rooms import RoomRegistry
from signaling.ws import chat, voice
from signaling.ws.relay import Handler, Relay

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from signaling.music_uploads import MusicUploads

log = logging.getLogger("disco.media")

MEDIA_HANDLERS: dict[str, Handler] = {
    "join": voice.on_relayed_join,
    **voice.ROOM_HANDLERS,
    "chat": chat.on_chat,
}
"""What a media node runs for the clients relayed to it (``signaling.ws.relay.RELAYED_TYPES``)."""

DRAIN_TIMEOUT_S = 10.0
"""A drain that takes longer (Redis unreachable, say) is abandoned: the node stops anyway."""


class DatabaseUploads:
    """Uploaded music on a media node: the database is opened when an upload not yet in
    this node's folder is first played (``signaling.music_uploads``, on a whole node)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._uploads: MusicUploads | None = None
        self._engine: Any = None

    async def ensure_local(self, source: str | None) -> None:
        from sfu import music

        if source is None or not music.UPLOAD_ID_RE.match(source):
            return
        if await asyncio.to_thread(music.has_upload, self.settings.upload_dir, source):
            return
        if self._uploads is None:
            from common.db import make_engine, make_session_factory
            from signaling.music_uploads import MusicUploads

            self._engine = make_engine(self.settings.database_url)
            self._uploads = MusicUploads(make_session_factory(self._engine),
                                         self.settings.upload_dir,
                                         self.settings.max_upload_bytes)
        await self._uploads.ensure_local(source)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


@dataclass
class MediaState:
    """Every service of a media node (``signaling.ws.connection.RoomNode``), built once."""

    settings: Settings
    rooms: RoomRegistry
    bus: RedisBus
    redis: Redis
    cluster: RedisCluster
    relay: Relay
    chat: ChatLog
    music_uploads: DatabaseUploads
    clock: Callable[[], float] = time.time
    nearby: None = None
    """No nearby room here: strangers' rooms stay on the whole nodes."""
    nearby_mesh: None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def install_rtc(settings: Settings) -> None:
    """aiortc's patches and this node's ICE addresses and ports (every kind of node).

    Imported here, not at start: aiortc is heavy to load. A patch that no longer
    takes fails the start, not the first call.
    """
    from protocol import aiortc_compat

    aiortc_compat.install()
    if settings.rtc_host_addresses:
        aiortc_compat.set_host_addresses(settings.rtc_host_addresses)
    aiortc_compat.set_port_range(settings.rtc_port_min, settings.rtc_port_max)


def check_media_settings(settings: Settings) -> None:
    if not settings.redis_url:
        raise SystemExit("disco media runs beside whole nodes (disco serve), and nodes meet "
                         "in Redis: set DISCO_REDIS_URL")


async def build_media_state(settings: Settings) -> MediaState:
    from redis.asyncio import Redis

    from sfu.room import MediaConfig

    assert settings.redis_url
    install_rtc(settings)
    bus = RedisBus(settings.redis_url, settings.redis_prefix)
    await bus.start()
    rooms = RoomRegistry(lambda: MediaConfig.from_settings(settings))
    redis = Redis.from_url(settings.redis_url)
    cluster = RedisCluster(
        settings.node_id, redis, settings.redis_prefix, rooms, time.time,
        capacity=settings.node_capacity,
        media_address=settings.rtc_public_ip or ",".join(settings.rtc_host_addresses),
        region=settings.node_region, role=ROLE_MEDIA,
    )
    await cluster.start()
    rooms.on_leave.append(cluster.participant_left)
    state = MediaState(settings=settings, rooms=rooms, bus=bus, redis=redis, cluster=cluster,
                       relay=Relay(settings.node_id, bus, cluster, lambda: state,
                                   MEDIA_HANDLERS),
                       chat=ChatLog(), music_uploads=DatabaseUploads(settings))
    await state.relay.start()
    state.spawn(live_music.follow_notices(bus, rooms), name="media-entitlements")
    return state


async def drain(state: MediaState) -> None:
    """No more rooms here; the relayed clients are told to join again (``host_lost``)."""
    await state.cluster.drain()
    await state.relay.drain()


async def close_media_state(state: MediaState) -> None:
    await cancel_and_wait(*state.background)
    await state.relay.close()
    await state.rooms.close()
    await state.cluster.close()
    await state.redis.aclose()
    await state.bus.close()
    await state.music_uploads.close()


def serve_metrics(settings: Settings) -> str:
    """Prometheus ``/metrics`` on ``DISCO_MEDIA_METRICS_PORT`` (the sfu's ``disco_sfu_*``),
    from prometheus-client's own server thread; says where, or that it is off."""
    if settings.media_metrics_port is None:
        return "no /metrics (DISCO_MEDIA_METRICS_PORT is unset)"
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.media_metrics_port, addr=settings.host)
    except OSError as exc:
        raise SystemExit(f"cannot serve /metrics on {settings.host}:"
                         f"{settings.media_metrics_port}: {exc}") from exc
    return f"/metrics on http://{settings.host}:{settings.media_metrics_port}/metrics"


async def serve_media(settings: Settings, stop: asyncio.Event) -> None:
    """Run one media node until ``stop`` is set, then drain and close it."""
    metrics = serve_metrics(settings)
    state = await build_media_state(settings)
    freeze_startup_objects()  # aiortc and the rest, imported by now: out of the cyclic GC
    print(f"media node {settings.node_id} is ready (pid {os.getpid()}): hosting the group "
          f"rooms that the nodes of prefix {settings.redis_prefix!r} relay to it; {metrics}",
          file=sys.stderr, flush=True)
    try:
        await stop.wait()
        print("draining: handing rooms over", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(drain(state), DRAIN_TIMEOUT_S)
        except Exception:
            log.exception("drain failed; stopping anyway")
    finally:
        await close_media_state(state)


def run_media_node(settings: Settings) -> None:
    """``disco media``: the first SIGTERM/SIGINT drains and stops; a second stops at once."""
    check_media_settings(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                os._exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await serve_media(settings, stop)

    try:
        import uvloop
    except ImportError:  # uvloop is optional, as for uvicorn
        asyncio.run(main())
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(main())
