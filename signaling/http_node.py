"""A whole node's HTTP server: uvicorn serving the app (REST, WebSocket, web client).

Apart from ``signaling.cli`` so that a media worker, spawned from the ``disco``
command, does not load uvicorn (``signaling.media_node``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from common.process import freeze_startup_objects
from common.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("disco")

WS_MAX_FRAME_BYTES = 1024 * 1024  # frames over this close the socket; 64 KiB gets an error


def serve_node(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    from signaling.app import create_app

    app = create_app(settings)
    freeze_startup_objects()
    scheme = "https" if settings.tls_certfile else "http"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws="websockets-sansio",
        ws_max_size=max(WS_MAX_FRAME_BYTES, 2 * settings.max_message_bytes),
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=True,
        ws_per_message_deflate=settings.ws_compression,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    ready = f"Disco is ready: web client at {scheme}://{settings.host}:{settings.port}/app/"
    if sockets is not None:
        ready = f"node {settings.node_id} is ready (pid {os.getpid()})"
    _AnnouncingServer(config, ready, app).run(sockets=sockets)


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, saying where the web client is once it really listens, and
    draining the node (``signaling.drain``) on the first SIGTERM/SIGINT before it stops."""

    def __init__(self, config: uvicorn.Config, ready_line: str, app: FastAPI) -> None:
        super().__init__(config)
        self.ready_line = ready_line
        self.app = app
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None and not self.should_exit and self.started:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)  # a second signal: stop now

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        from signaling.drain import DRAIN_TIMEOUT_S, drain

        print("draining: handing rooms over and telling clients to reconnect",
              file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(drain(self.app.state.disco), DRAIN_TIMEOUT_S)
        except Exception:
            log.exception("drain failed; stopping anyway")
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # runs the app's lifespan: every service is built
        if self.started:
            freeze_startup_objects()  # aiortc (imported by build_state) and the services too
            print(self.ready_line, file=sys.stderr, flush=True)
