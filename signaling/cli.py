"""The ``disco`` command: ``disco serve`` runs the server, ``disco admin`` helps operators."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from common.settings import DEV_JWT_SECRET, Settings, load_settings
from signaling import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("disco")

NEARBY_HELPER_NICE = 10
"""The helper compiling the nearby index yields the CPU to the server starting beside it."""
WS_MAX_FRAME_BYTES = 1024 * 1024  # frames over this close the socket; 64 KiB gets an error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disco",
        description="Disco: self-hosted group voice and group location server.",
        epilog="Settings also come from DISCO_* environment variables; see disco.example.env.",
    )
    parser.add_argument("--version", action="version", version=f"disco {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (REST, WebSocket, web client)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--config", type=Path, help="env-style settings file (DISCO_*=...)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="run N nodes (processes) behind this one port, about one per core; "
                            "N > 1 needs DISCO_REDIS_URL (default 1)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--dev", dest="dev", action="store_true", default=None,
                      help="dev mode: placeholder secrets allowed (default)")
    mode.add_argument("--prod", dest="dev", action="store_false",
                      help="production mode: refuse placeholder secrets")

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--config", type=Path)

    try:
        from signaling.admin_cli import add_admin_commands
    except ImportError:
        pass
    else:
        add_admin_commands(commands)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("host", "port", "dev"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(getattr(args, "config", None), **overrides)


def with_dev_vapid_keys(settings: Settings) -> Settings:
    """Dev mode without Web Push keys: make a pair for this run (printed by announce_dev_mode)."""
    if not settings.dev or settings.vapid_private_key:
        return settings
    from groups.push.webpush import VapidKeys

    keys = VapidKeys.generate()
    print("  Web Push: generated DISCO_VAPID_PRIVATE_KEY for this run "
          "(set it to keep browsers' subscriptions across restarts):", file=sys.stderr)
    print(f"  DISCO_VAPID_PRIVATE_KEY={keys.private_key}", file=sys.stderr)
    return settings.model_copy(update={"vapid_private_key": keys.private_key})


def announce_dev_mode(settings: Settings) -> None:
    """Dev mode says plainly which secrets are placeholders, as LiveKit's --dev does."""
    if not settings.dev:
        return
    print("=" * 72, file=sys.stderr)
    print("Disco is running in DEV MODE with placeholder secrets. Do not expose it.",
          file=sys.stderr)
    if settings.jwt_secret == DEV_JWT_SECRET:
        print(f"  DISCO_JWT_SECRET={settings.jwt_secret}", file=sys.stderr)
    if settings.turn_secret:
        print(f"  DISCO_TURN_SECRET={settings.turn_secret}", file=sys.stderr)
    print(f"  database: {settings.database_url}", file=sys.stderr)
    print(f"  bus: {'redis ' + settings.redis_url if settings.redis_url else 'in-process'}",
          file=sys.stderr)
    print("Set DISCO_DEV=false and real secrets for production.", file=sys.stderr)
    print("=" * 72, file=sys.stderr)


def serve(settings: Settings, workers: int = 1) -> None:
    settings.check_production_ready()
    settings = with_dev_vapid_keys(settings)  # once: every worker pushes with the same key
    if workers != 1:
        from signaling.workers import check_workers, supervise

        check_workers(settings, workers)
        announce_dev_mode(settings)
        prepare_nearby_cache()  # once here; the workers load it from numba's cache
        raise SystemExit(supervise(settings, workers, _worker))
    announce_dev_mode(settings)
    prepare_nearby_cache()
    _serve_node(settings)


def prepare_nearby_cache() -> None:
    """Compile the nearby index's kernels into numba's on-disk cache, in a helper process.

    In the background: the server itself imports no numba (~150 MB with the
    kernels) until somebody joins its nearby room (``signaling.ws.session.
    nearby_kernels``), which then only loads the cache.
    """
    print("preparing the nearby index in a helper process (compiled on the first start "
          "only; a node loads it when somebody first joins its nearby room)",
          file=sys.stderr, flush=True)
    # No inherited stdout or stderr: whoever reads the server's output (a supervisor, a
    # test) sees it end when the server ends, not when a first compile does.
    helper = subprocess.Popen(
        [sys.executable, "-m", "groups.nearby.proximity"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(NEARBY_HELPER_NICE))
    threading.Thread(target=helper.wait, name="nearby-helper", daemon=True).start()  # reaped
    atexit.register(_stop_helper, helper)


def _stop_helper(helper: subprocess.Popen[bytes]) -> None:
    """The server stops: a compile still running stops with it (the next start redoes it)."""
    if helper.poll() is None:
        helper.terminate()


def _worker(settings_json: str, sockets: list[socket.socket]) -> None:
    """One worker of ``disco serve --workers N`` (``signaling.workers``)."""
    from signaling.workers import worker_settings

    settings = worker_settings(settings_json)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _serve_node(settings, sockets)


def _serve_node(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
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
        await super().startup(sockets)
        if self.started:
            print(self.ready_line, file=sys.stderr, flush=True)


def freeze_startup_objects() -> None:
    """Keep what the imports built (~160,000 objects, there for good) out of the cyclic GC.

    A full collection walks every tracked object: ~80 ms here, four mixer
    ticks during which no audio moves. Frozen objects are skipped, so the
    occasional full pass only walks what the running server made since.
    """
    gc.collect()
    gc.freeze()


def migrate_only(settings: Settings) -> None:
    import asyncio

    from common.db import make_engine, migrate

    async def run() -> None:
        engine = make_engine(settings.database_url)
        await migrate(engine)
        await engine.dispose()

    asyncio.run(run())
    print(f"migrated {settings.database_url}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        serve(settings, args.workers)
    elif args.command == "migrate":
        migrate_only(settings)
    else:
        from signaling.admin_cli import run_admin

        raise SystemExit(run_admin(args, settings))


if __name__ == "__main__":
    main()
