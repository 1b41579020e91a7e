"""The ``disco`` command: ``disco serve`` runs the server, ``disco admin`` helps operators."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from common.settings import DEV_JWT_SECRET, Settings, load_settings
from signaling import __version__

log = logging.getLogger("disco")

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
    scheme = "https" if settings.tls_certfile else "http"
    print(f"  web client: {scheme}://{settings.host}:{settings.port}/app/", file=sys.stderr)
    print("Set DISCO_DEV=false and real secrets for production.", file=sys.stderr)
    print("=" * 72, file=sys.stderr)


def serve(settings: Settings) -> None:
    import uvicorn

    from groups.nearby import proximity
    from signaling.app import create_app

    settings.check_production_ready()
    settings = with_dev_vapid_keys(settings)
    announce_dev_mode(settings)
    app = create_app(settings)
    took = proximity.warm_up()  # compiled objects too are there for good: freeze them as well
    if took > 1.0:
        print(f"  nearby index compiled in {took:.1f} s (numba caches it for later starts)",
              file=sys.stderr)
    freeze_startup_objects()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws="websockets-sansio",
        ws_max_size=max(WS_MAX_FRAME_BYTES, 2 * settings.max_message_bytes),
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=True,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )


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
        serve(settings)
    elif args.command == "migrate":
        migrate_only(settings)
    else:
        from signaling.admin_cli import run_admin

        raise SystemExit(run_admin(args, settings))


if __name__ == "__main__":
    main()
