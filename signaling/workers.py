"""``disco serve --workers N``: N nodes on one machine behind one HTTP port.

One Python process mixes about one core's worth of audio (the GIL), so a
machine's capacity is the sum of its processes. The parent binds the port
once, applies the migrations once, then starts N worker processes that all
accept on that socket (the kernel spreads the connections). Each worker is a
whole node with its own id (``<node_id>-w<i>``) and its own media ports; the
workers find each other, place rooms and relay signaling through Redis
exactly as nodes on separate machines do, so a worker may accept a member
whose room another worker hosts.

The parent supervises: a worker that dies is started again (after a short
pause, so a crash loop does not spin), and SIGTERM/SIGINT stop them all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import multiprocessing.context
import multiprocessing.queues
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from common.settings import Settings

log = logging.getLogger("disco.workers")

RESTART_PAUSE_S = 1.0
"""How long a dead worker's slot waits before it is started again."""
STOP_TIMEOUT_S = 15.0
"""How long the workers get to drain after SIGTERM before they are killed."""
LISTEN_BACKLOG = 2048


class WorkersError(Exception):
    """``--workers`` cannot run with these settings; the message says why and what to set."""


def check_settings(settings: Settings) -> None:
    """Several workers share rooms through Redis and data through PostgreSQL."""
    n = settings.workers
    if n <= 1:
        return
    if not settings.redis_url:
        raise WorkersError(
            f"--workers {n} runs {n} nodes that place rooms and relay members through Redis: "
            "set DISCO_REDIS_URL (or run one worker)"
        )
    if settings.database_url.startswith("sqlite"):
        raise WorkersError(
            f"--workers {n} needs a database several processes can write at once: "
            "set DISCO_DATABASE_URL to PostgreSQL (SQLite is for one process)"
        )


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index``: its own node id, one worker."""
    return settings.model_copy(update={"node_id": f"{settings.node_id}-w{index}", "workers": 1})


def bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _migrate(settings: Settings) -> None:
    from common.db import make_engine, migrate

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


Serve = Callable[[Settings, socket.socket, Callable[[], None]], None]
"""Run one node on an already bound socket; call the callback once it listens."""


def _worker_main(settings: Settings, index: int, sock: socket.socket, ready: Any,
                 serve_one: Serve) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s w{index} %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    serve_one(worker_settings(settings, index), sock, lambda: ready.put(index))


def run(settings: Settings, serve_one: Serve, ready_line: str) -> None:
    """Bind, migrate, start ``settings.workers`` workers and supervise them until signalled."""
    check_settings(settings)
    sock = bind(settings)
    _migrate(settings)  # once, before any worker starts (each would wait on the lock)
    ctx = mp.get_context("spawn")
    ready: multiprocessing.queues.Queue[int] = ctx.Queue()
    procs: dict[int, multiprocessing.context.SpawnProcess] = {}

    def start(index: int) -> None:
        proc = ctx.Process(target=_worker_main, name=f"disco-w{index}",
                           args=(settings, index, sock, ready, serve_one))
        proc.start()
        procs[index] = proc

    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(settings.workers):
        start(index)
    announced = False
    started: set[int] = set()
    while not stopping:
        while not ready.empty():
            started.add(ready.get())
        if not announced and len(started) >= settings.workers:
            print(f"{ready_line} ({settings.workers} workers)", file=sys.stderr, flush=True)
            announced = True
        for index, proc in list(procs.items()):
            if not proc.is_alive() and not stopping:
                log.error("worker %d exited with %s; starting it again in %.0f s",
                          index, proc.exitcode, RESTART_PAUSE_S)
                time.sleep(RESTART_PAUSE_S)
                start(index)
        time.sleep(0.2)
    for proc in procs.values():
        if proc.is_alive() and proc.pid is not None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    sock.close()
