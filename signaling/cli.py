"""The ``disco`` command: ``disco serve`` runs the server, ``disco admin`` helps operators."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from common.settings import DEV_JWT_SECRET, Settings, load_settings
from signaling import __version__

log = logging.getLogger("disco")

NEARBY_HELPER_NICE = 10
"""The helper compiling the nearby index yields the CPU to the server starting beside it."""


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
    serve.add_argument("--media-workers", type=int, default=0, metavar="M",
                       help="also run M media nodes (calls only: no HTTP, no database; "
                            "group rooms go to them first); needs DISCO_REDIS_URL (default 0)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--dev", dest="dev", action="store_true", default=None,
                      help="dev mode: placeholder secrets allowed (default)")
    mode.add_argument("--prod", dest="dev", action="store_false",
                      help="production mode: refuse placeholder secrets")

    media = commands.add_parser(
        "media", help="run a media node: hosts group calls relayed by the disco serve nodes",
        description="A media node hosts group rooms' calls and nothing else (no HTTP, no "
                    "database): the disco serve nodes of the same DISCO_REDIS_URL and "
                    "DISCO_REDIS_PREFIX place new group rooms on it and relay their members' "
                    "signaling to it. Clients must reach its media address "
                    "(DISCO_RTC_HOST_ADDRESSES / DISCO_RTC_PUBLIC_IP, DISCO_RTC_PORT_MIN/MAX).")
    media.add_argument("--config", type=Path, help="env-style settings file (DISCO_*=...)")

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--config", type=Path)

    add_admin_commands(commands)
    return parser


def add_admin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``admin`` and its actions (run by ``signaling.admin_cli``, which loads the
    database code: only when an admin command runs)."""
    parser = subparsers.add_parser("admin", help="operator tools: subscriptions, webhooks, grants")
    parser.add_argument("--config", type=Path, help="env-style settings file (DISCO_*=...)")
    actions = parser.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    actions.add_parser("subscriptions", help="list users' plans and subscription status")
    hooks = actions.add_parser("webhooks", help="recent Stripe webhook deliveries, with outcome")
    hooks.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    grant = actions.add_parser("grant", help="put a user on a plan by hand (support cases)")
    grant.add_argument("user", help="user name or id")
    grant.add_argument("plan", help="plan name from the plans file; the default plan revokes")
    grant.add_argument("--days", type=int, help="grant for this many days (default: no end)")


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


def serve(settings: Settings, workers: int = 1, media_workers: int = 0) -> None:
    settings.check_production_ready()
    supervised = workers != 1 or media_workers != 0
    if supervised:
        from signaling.workers import check_workers

        check_workers(settings, workers, media_workers)  # before anything is printed
    settings = with_dev_vapid_keys(settings)  # once: every worker pushes with the same key
    if supervised:
        from signaling.workers import supervise

        announce_dev_mode(settings)
        prepare_nearby_cache()  # once here; the workers load it from numba's cache
        raise SystemExit(supervise(settings, workers, _worker, media_workers, _media_worker))
    announce_dev_mode(settings)
    prepare_nearby_cache()
    from signaling.http_node import serve_node  # uvicorn: not in a media worker (spawned)

    serve_node(settings)


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
    from signaling.http_node import serve_node

    serve_node(settings, sockets)


def _media_worker(settings_json: str, _sockets: list[socket.socket]) -> None:
    """One media worker of ``disco serve --media-workers M`` (``signaling.media_node``)."""
    from signaling.media_node import run_media_node
    from signaling.workers import worker_settings

    settings = worker_settings(settings_json, "media")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_media_node(settings)


def migrate_only(settings: Settings) -> None:

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
        serve(settings, args.workers, args.media_workers)
    elif args.command == "media":
        from signaling.media_node import run_media_node
        from signaling.workers import worker_settings

        # <DISCO_NODE_ID>-media-<pid>: never the id of a disco serve beside it
        run_media_node(worker_settings(settings.model_dump_json(), "media"))
    elif args.command == "migrate":
        migrate_only(settings)
    else:
        from signaling.admin_cli import run_admin

        raise SystemExit(run_admin(args, settings))


if __name__ == "__main__":
    main()
