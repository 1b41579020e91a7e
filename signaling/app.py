"""The composition root: one ASGI app serving REST, /ws and the web client.

``create_app(settings)`` wires every part from the settings; nothing is
built at import time. Start-up applies migrations and starts the bus;
shutdown closes rooms, the bus and the database engine in that order.
"""

from __future__ import annotations

import dataclasses
import logging
import mimetypes
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from billing.plans import load_catalog
from common.bus import RedisBus, make_bus
from common.db import make_engine, make_session_factory, migrate
from common.errors import DiscoError
from common.settings import Settings
from groups.chat import ChatLog
from groups.limiter import make_limiter
from groups.location.fixes import FIX_BURST, FIX_RATE_PER_S, FixLimiter
from groups.location.service import SOS_BURST, SOS_RATE_PER_S, LocationService
from groups.login_limits import make_login_limits
from groups.nearby.proximity import GainCurve
from groups.push.configure import make_senders
from groups.push.dispatcher import PushDispatcher
from signaling import __version__, push_hooks
from signaling.auth import TokenSigner
from signaling.cluster.local import LocalCluster
from signaling.cluster.redis_cluster import RedisCluster
from signaling.deps import AppState, Clock
from signaling.edge_errors import error_body, http_headers, http_status
from signaling.music_uploads import MusicUploads
from signaling.nearby import NEARBY_ROOM, NearbyRoom
from signaling.nearby_mesh import NearbyMesh
from signaling.rooms import RoomRegistry
from signaling.routes import account as routes_account
from signaling.routes import auth as routes_auth
from signaling.routes import billing as routes_billing
from signaling.routes import devices as routes_devices
from signaling.routes import groups as routes_groups
from signaling.routes import location as routes_location
from signaling.routes import music as routes_music
from signaling.routes.billing import make_billing_service
from signaling.ws.relay import Relay
from signaling.ws.session import HANDLERS, serve_websocket

if TYPE_CHECKING:
    from sfu.room import MediaConfig

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"
"""The web client (``clients/web``), served at ``/app/``."""
mimetypes.add_type("application/manifest+json", ".webmanifest")  # the PWA manifest
WEB_GZIP_MIN_BYTES = 1024
# Routes whose bodies may exceed the JSON size limit.
LARGE_BODY_PATHS = ("/api/music/uploads", "/api/billing/webhook")

ROOMS = Gauge("disco_rooms", "Rooms open on this node")
PARTICIPANTS = Gauge("disco_participants", "Participants in rooms on this node")


def _media_config(settings: Settings) -> MediaConfig:
    from sfu.room import MediaConfig  # imported on first use: aiortc is heavy to load

    return MediaConfig.from_settings(settings)


def make_cluster(settings: Settings, rooms: RoomRegistry, clock: Clock,
                 redis: Redis | None) -> LocalCluster | RedisCluster:
    """One node alone (no Redis), or a node of the deployment sharing ``DISCO_REDIS_URL``."""
    if redis is not None:
        return RedisCluster(
            settings.node_id, redis, settings.redis_prefix, rooms, clock,
            capacity=settings.node_capacity, node_url=settings.node_url or "",
            media_address=settings.rtc_public_ip or ",".join(settings.rtc_host_addresses),
            region=settings.node_region,
        )
    return LocalCluster(settings.node_id, clock, settings.node_url or "")


async def build_state(settings: Settings, clock: Clock) -> AppState:
    """Build every service of the node once, as typed attributes of ``AppState``."""
    engine = make_engine(settings.database_url)
    await migrate(engine)
    # The nearby index's kernels (numba) load on the first nearby join
    # (signaling.ws.session.nearby_kernels), not here: a voice node may never need them.
    # aiortc/aioice patches: fail at start, not at the first call, if one no longer takes
    from protocol import aiortc_compat  # imports aiortc: here, not when the CLI loads

    aiortc_compat.install()
    if settings.rtc_host_addresses:
        aiortc_compat.set_host_addresses(settings.rtc_host_addresses)
    aiortc_compat.set_port_range(settings.rtc_port_min, settings.rtc_port_max)
    bus = make_bus(settings.redis_url, settings.redis_prefix)
    await bus.start()
    sessions = make_session_factory(engine)
    rooms = RoomRegistry(lambda: _media_config(settings))
    nearby = NearbyRoom(rooms, GainCurve(
        settings.nearby_full_fraction, settings.nearby_gain_floor, settings.nearby_gain_exponent
    ))
    rooms.on_leave.append(nearby.leave)
    # one client for the node's shared keys: placement, rate limits (the bus has its own)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    cluster = make_cluster(settings, rooms, clock, redis)
    await cluster.start()  # registers this node: from here it may be given rooms
    rooms.on_leave.append(cluster.participant_left)
    rooms.audiences[NEARBY_ROOM] = nearby.hearers
    rooms.media_started[NEARBY_ROOM] = nearby.media_started
    # strangers each hear a different set: no room-wide top-N there (sfu.room.MediaConfig)
    rooms.media_config_for[NEARBY_ROOM] = lambda c: dataclasses.replace(c, room_wide_top_n=False)
    plans = load_catalog(settings.plans_file)
    fixes = FixLimiter(make_limiter(redis, "fixes", FIX_RATE_PER_S, FIX_BURST,
                                    settings.redis_prefix))
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=bus,
        signer=TokenSigner(settings.jwt_secret, settings.jwt_audience, settings.jwt_issuer),
        plans=plans,
        rooms=rooms,
        nearby=nearby,
        chat=ChatLog(),
        locations=LocationService(sessions, bus, fixes, make_limiter(
            redis, "sos", SOS_RATE_PER_S, SOS_BURST, settings.redis_prefix)),
        billing=make_billing_service(settings, plans, sessions, lambda: state.clock()),
        push=PushDispatcher(sessions, make_senders(settings)),
        limits=make_login_limits(settings, redis),
        music_uploads=MusicUploads(sessions, settings.upload_dir, settings.max_upload_bytes),
        redis=redis,
        cluster=cluster,
        relay=Relay(settings.node_id, bus, cluster, lambda: state, HANDLERS,
                    lambda session, room: push_hooks.relayed_call_started(state, session, room)),
        clock=clock,
    )
    await state.relay.start()
    if redis is not None and isinstance(bus, RedisBus):
        # strangers in range hear each other whichever node serves them
        state.nearby_mesh = NearbyMesh(settings.node_id, nearby, bus, redis,
                                       settings.redis_prefix, clock)
        await state.nearby_mesh.start()
    return state


async def close_state(state: AppState) -> None:
    """Stop the node's jobs, then close rooms, push, the bus and the database, in that order."""
    await state.cancel_background()
    await state.relay.close()
    if state.nearby_mesh is not None:
        await state.nearby_mesh.close()
    await state.rooms.close()
    await state.push.close()
    await state.limits.close()
    await state.cluster.close()
    if state.redis is not None:
        await state.redis.aclose()
    await state.bus.close()
    await state.engine.dispose()


def create_app(settings: Settings, clock: Clock = time.time) -> FastAPI:
    settings.check_production_ready()
    if settings.vapid_private_key:  # a bad key stops the server here, not mid start-up
        from groups.push.webpush import check_settings

        try:
            check_settings(settings.vapid_private_key,
                           settings.vapid_subject or settings.public_url)
        except DiscoError as exc:
            raise SystemExit(f"refusing to start: Web Push (DISCO_VAPID_*): {exc.message}"
                             ) from exc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings, clock)
        app.state.disco = state
        state.start_job(routes_location.retention_loop(state), name="location-retention")
        state.start_job(routes_billing.follow_entitlements(state), name="billing-entitlements")
        try:
            yield
        finally:
            await close_state(state)

    app = FastAPI(title="Disco", version=__version__, lifespan=lifespan)

    @app.exception_handler(DiscoError)
    async def disco_error(_request: Request, exc: DiscoError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=http_status(exc),
                            headers=http_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return JSONResponse(
            {"error": "bad_request", "message": f"{where}: {first['msg']}"}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONResponse({"error": code, "message": str(exc.detail)},
                            status_code=exc.status_code)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        limit = settings.max_message_bytes
        if request.url.path.startswith(LARGE_BODY_PATHS):
            limit = settings.max_upload_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            return JSONResponse(
                {"error": "message_too_large", "message": f"bodies are limited to {limit} bytes"},
                status_code=413,
            )
        return await call_next(request)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict[str, object]:
        state: AppState = request.app.state.disco
        return {"status": "ok", "version": __version__, "node": settings.node_id,
                "rooms": len(state.rooms.rooms())}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        state: AppState = request.app.state.disco
        ROOMS.set(len(state.rooms.rooms()))
        PARTICIPANTS.set(state.rooms.participant_count())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await serve_websocket(ws.app.state.disco, ws)

    for routes in (routes_auth, routes_account, routes_groups, routes_music, routes_billing,
                   routes_devices, routes_location):
        app.include_router(routes.router)

    from signaling.routes import map as routes_map

    app.include_router(routes_map.make_router(settings))

    if WEB_DIR.is_dir():
        # Compressed (MapLibre's 1 MB of JS is ~0.3 MB gzipped); only here: the
        # basemap's range responses (/map/) must stay byte-exact.
        app.mount("/app", GZipMiddleware(StaticFiles(directory=WEB_DIR, html=True),
                                         minimum_size=WEB_GZIP_MIN_BYTES), name="web")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/app/")

    return app
