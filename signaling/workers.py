"""``disco serve --workers N``: N nodes on one machine behind one HTTP port.

One Python process mixes about one core's worth of audio (the GIL), so a
machine with several cores runs several nodes. The parent binds the port once
and starts N worker processes that all accept on that socket (the kernel
hands each new connection to one of them); each worker is a whole node of the
deployment (``<DISCO_NODE_ID>-<pid>``) with its own media ports, and the
workers meet in Redis like nodes on different machines: any worker accepts
any WebSocket and relays a room hosted by another (``signaling.ws.relay``).
Hence N > 1 needs ``DISCO_REDIS_URL``.

``--media-workers M`` adds M media nodes (``signaling.media_node``): rooms
only, no HTTP (they are not given the socket), no database. Group rooms are
placed on them first, and the N workers relay their members there.

The parent forwards SIGTERM/SIGINT to the workers once (each drains: see
``signaling.drain``) and waits for them; a worker that dies is started again
(a new node: its rooms were placed anew when its heartbeat lapsed); workers
that keep dying at start stop the whole server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from types import FrameType

from common.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2
STOP_TIMEOUT_S = 25.0
"""How long the workers get to drain and stop before they are killed."""
EARLY_DEATH_S = 10.0
"""A worker dying this soon after its start counts as a start-up failure."""
MAX_EARLY_DEATHS = 3

WorkerTarget = Callable[[str, list[socket.socket]], None]
"""Runs one node: (the settings as JSON, the listening sockets)."""
Slot = tuple[WorkerTarget, str]
"""What a worker runs, with which settings as JSON (its replacement gets the same)."""


def check_workers(settings: Settings, workers: int, media_workers: int = 0) -> None:
    """Refuse what cannot work, saying why."""
    if workers < 1:
        raise SystemExit("--workers must be 1 or more")
    if media_workers < 0:
        raise SystemExit("--media-workers must be 0 or more")
    if workers > 1 and not settings.redis_url:
        raise SystemExit(
            f"--workers {workers} runs {workers} nodes of one deployment, and nodes meet in "
            "Redis: set DISCO_REDIS_URL (or run one worker)"
        )
    if media_workers and not settings.redis_url:
        raise SystemExit(
            f"--media-workers {media_workers} runs media nodes beside the server, and nodes "
            "meet in Redis: set DISCO_REDIS_URL (or run no media workers)"
        )


def bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        raise SystemExit(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def worker_settings(settings_json: str, kind: str = "") -> Settings:
    """A worker's settings: the parent's, with a node id of its own
    (``<DISCO_NODE_ID>-<pid>``, or ``<DISCO_NODE_ID>-media-<pid>`` for ``kind="media"``)."""
    settings = Settings.model_validate_json(settings_json)
    infix = f"-{kind}" if kind else ""
    return settings.model_copy(update={"node_id": f"{settings.node_id}{infix}-{os.getpid()}"})


def supervise(settings: Settings, workers: int, target: WorkerTarget,
              media_workers: int = 0, media_target: WorkerTarget | None = None) -> int:
    """Run ``workers`` nodes (and ``media_workers`` media nodes, with ``media_target``)
    until a signal; returns the exit code."""
    check_workers(settings, workers, media_workers)
    multiprocessing.allow_connection_pickling()
    context = multiprocessing.get_context("spawn")
    sock = bind(settings)
    stopping: list[int] = []
    slots: list[Slot] = [(target, settings.model_dump_json())] * workers
    if media_workers:
        assert media_target is not None
        port = settings.media_metrics_port
        slots += [(media_target, settings.model_copy(update={
            "media_metrics_port": port + i if port is not None else None}).model_dump_json())
            for i in range(media_workers)]

    def start(slot: Slot) -> tuple[SpawnProcess, float]:
        kind, payload = slot
        shared = sock if kind is target else None  # a media node serves no HTTP
        process = context.Process(target=_run, args=(kind, payload, shared), daemon=False)
        process.start()
        return process, time.monotonic()

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stopping.append(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs = [start(slot) for slot in slots]
    media = f" and {media_workers} media workers" if media_workers else ""
    print(f"started {workers} workers{media} on {settings.host}:{settings.port} "
          f"(pids {', '.join(str(p.pid) for p, _ in procs)})", file=sys.stderr, flush=True)
    early_deaths = 0
    code = 0
    while not stopping:
        time.sleep(POLL_S)
        for i, (process, started) in enumerate(procs):
            if process.is_alive() or stopping:
                continue
            lived = time.monotonic() - started
            log.warning("worker %s exited (%s) after %.1f s; starting another",
                        process.pid, process.exitcode, lived)
            early_deaths = early_deaths + 1 if lived < EARLY_DEATH_S else 0
            if early_deaths >= MAX_EARLY_DEATHS:
                print("workers keep failing at start; stopping", file=sys.stderr, flush=True)
                stopping.append(signal.SIGTERM)
                code = 1
                break
            procs[i] = start(slots[i])
    for process, _ in procs:  # once: each worker drains on its first signal
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process, _ in procs:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    sock.close()
    return code


def _run(target: WorkerTarget, payload: str, sock: socket.socket | None) -> None:
    """In the worker: a process group of its own (a terminal's Ctrl-C reaches only
    the parent, which forwards one SIGTERM), then one node on the shared socket."""
    os.setpgrp()
    target(payload, [sock] if sock is not None else [])
