"""Scale-out on one machine: ``disco serve --workers W``, rooms of 10 spread over the workers.

    .venv/bin/python -m bench.cluster [--workers 1 2] [--rooms 2] [--seconds 10] [--rounds 3]
    .venv/bin/python -m bench.cluster --rss [--workers 1 2 4] [--media-workers 1]

For each W, in one run: starts ``disco serve --workers W`` on a fresh SQLite
database and the Redis of ``DISCO_TEST_REDIS_URL`` (a key prefix of its own,
deleted afterwards), pins worker ``i`` to CPU ``i mod cores``, and reads each
worker's idle RSS (VmRSS) and idle CPU over a few seconds. It then creates
``--rooms`` groups of 10 members and places room ``r`` on worker ``r mod W``
by writing the room's claim in Redis before anyone joins (placement keeps a
live holder, so the first join lands there; members whose WebSocket the
kernel hands to another worker are relayed to it, as in production). Each
room is driven by one client process with ``bench.voice``'s load clients
(full duplex: 3 talkers taking turns, 7 listeners sending silence), every
packet Opus-encoded before the call so that the clients stay cheap.

Reported per worker, over a ``--seconds`` window once everybody hears audio:
participants hosted, % of a core (user+system from /proc/<pid>/stat), and
the participants it would hold at 80 % of a core, extrapolated linearly
from the idle cost and the measured per-participant cost:
``held = (0.80 - idle) / ((busy - idle) / participants)``. The clients share
this machine's cores with the workers (2 cores here: with W = 2 every core
has a worker), so the per-participant cost is measured at a fixed, moderate
load rather than by ramping each worker to 80 % (which would starve the
clients); the worst listener's received frames show whether the clients
kept up. Then per W: the machine's capacity (the sum over workers) and the
scaling efficiency, ``held(W) / (W x held(1))`` (needs W = 1 in the same
run), over the runs where the median client received >= 90 % of its frames
(``--rounds`` alternates the W values; the medians are compared). Ratios
from one run are comparable; absolute figures move with whatever else the
machine runs.

``--rss`` only starts ``disco serve --workers W`` for each W and prints the
idle RSS of each worker and of the supervisor (issue #15: a voice worker
carries no numba, Stripe, Alembic or push library until it needs one).

``--media-workers M`` adds M media workers (``disco media``: rooms only, no
HTTP, no database) to every run: ``--rss`` prints their idle RSS apart, and
the load run places the rooms on them (room ``r`` on media worker ``r mod
M``); the W whole workers then only relay the members' signaling.

The relay's added signaling round trip (issue #11's <= 5 ms p99) is
measured by ``python -m bench.relay``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import server as bench_server
from bench import voice

ROOM_SIZE = 10
SAMPLE_RATE_HZ = 48_000
FRAME_SAMPLES = 960  # 20 ms
TALKERS_PER_ROOM = voice.TALKERS
CPU_LIMIT = 0.80
FRAMES_OK = 0.90
"""A run counts only if the median client received this share of its frames: below
it the clients, not the workers, were the bottleneck and the cost means little."""
IDLE_S = 3.0
START_TIMEOUT_S = 90.0
CLAIM_TTL_MS = 600_000
"""The bench's claims outlive the run; the hosting worker renews them anyway."""
DEFAULT_REDIS = "redis://127.0.0.1:6379/2"


@dataclass
class Worker:
    node_id: str
    pid: int
    cpu: int | None = None
    rss_idle_mb: float = 0.0
    idle: float = 0.0
    busy: float = 0.0
    participants: int = 0

    def held(self) -> float:
        """Participants at ``CPU_LIMIT`` of a core, extrapolated from idle and busy cost."""
        if self.participants == 0 or self.busy <= self.idle:
            return float("nan")
        return (CPU_LIMIT - self.idle) / ((self.busy - self.idle) / self.participants)


def _pre_encoded_track(index: int | None, t0: float, onsets: list[float] | None = None,
                       dtx: bool = False) -> Any:
    """``bench.voice``'s client track, with the talkers' tone pre-encoded too.

    Forty clients on a 2-core machine that also runs the workers must be
    cheap: every packet here is encoded once, before the call (a second of
    tone, whole-Hz so it repeats, and one silent frame); the talkers still
    take turns (``voice._burst_on``) and the send times stay honest. No DTX
    (``dtx`` is refused): silent members send a silent frame every 20 ms.
    """
    if dtx:
        raise ValueError("bench.cluster's clients send no DTX")
    import numpy as np
    from aiortc.mediastreams import MediaStreamTrack

    from sfu.codec import OpusEncoder, make_packet

    encoder = OpusEncoder()
    silence = encoder.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    freq = voice.TONES_HZ[index % len(voice.TONES_HZ)] if index is not None else 0.0
    samples = np.arange(SAMPLE_RATE_HZ)
    tone = (0.25 * 32_767 * np.sin(2 * np.pi * freq * samples / SAMPLE_RATE_HZ)
            ).astype(np.int16)
    tone_packets = [encoder.encode(tone[i:i + FRAME_SAMPLES])
                    for i in range(0, SAMPLE_RATE_HZ, FRAME_SAMPLES)]

    class Packets(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._pts = 0
            self._start: float | None = None
            self._was_on = False
            self.level_dbov = -127
            """The RFC 6464 level of the frame just returned (``voice.add_track``)."""

        async def recv(self) -> Any:
            if self._start is None:
                self._start = time.monotonic()
            else:
                wait = self._start + self._pts / SAMPLE_RATE_HZ - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            now = time.monotonic()
            on = index is not None and voice._burst_on(index, now, t0)
            if on and not self._was_on and onsets is not None:
                onsets.append(now)
            self._was_on = on
            self.level_dbov = voice.TONE_DBOV if on else -127
            frame = (self._pts // FRAME_SAMPLES) % len(tone_packets)
            packet = make_packet(tone_packets[frame] if on else silence, self._pts)
            self._pts += FRAME_SAMPLES
            return packet

    return Packets()


def _clients(*args: Any) -> None:
    """One room's clients in this process: ``bench.voice``'s, sending pre-encoded packets."""
    voice._opus_track = _pre_encoded_track  # type: ignore[assignment]  # this process only
    voice._worker(*args)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_mb(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, USS) of ``pid`` in MB from /proc/<pid>/smaps_rollup: PSS shares each page
    among the processes that map it, USS counts only the pages no other process maps."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields.get("Rss", 0) / 1024, fields.get("Pss", 0) / 1024, uss / 1024


def _cpu_rates(pids: list[int], seconds: float) -> list[float]:
    before = [bench_server.cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return [(bench_server.cpu_seconds(p) - b) / wall for p, b in zip(pids, before, strict=True)]


def _start(workdir: Path, port: int, workers: int, redis_url: str, prefix: str,
           media_workers: int = 0) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env.update(bench_server.server_env(workdir, "bench.db"))
    env.update({"DISCO_NODE_ID": "bench", "DISCO_REDIS_URL": redis_url,
                "DISCO_REDIS_PREFIX": prefix})
    disco = bench_server.disco_binary()
    # migrate first, once: the workers then start on a ready database
    subprocess.run([disco, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    log = (workdir / f"server-{workers}.log").open("wb")
    return subprocess.Popen(
        [disco, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--media-workers", str(media_workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _nodes(redis_url: str, prefix: str, want: int) -> list[str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            ids = sorted(_text(m) for m in await client.smembers(prefix + "nodes"))
            alive = [i for i in ids if await client.exists(f"{prefix}node:{i}")]
            if len(alive) >= want:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {alive} of {want} workers registered")
            await asyncio.sleep(0.3)
    finally:
        await client.aclose()


async def _claim(redis_url: str, prefix: str, claims: dict[str, str]) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        for room, node in claims.items():
            await client.set(f"{prefix}room:{room}", node, px=CLAIM_TTL_MS)
    finally:
        await client.aclose()


async def _holders(redis_url: str, prefix: str, rooms: list[str]) -> list[str | None]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        values = await client.mget([f"{prefix}room:{r}" for r in rooms])
        return [_text(v) if v is not None else None for v in values]
    finally:
        await client.aclose()


async def _cleanup(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _pid_of(node_id: str, server_pid: int) -> int:
    """``--workers 1`` runs the node in the server process; more are ``<id>-<pid>``."""
    tail = node_id.rsplit("-", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else server_pid


def is_media(node_id: str) -> bool:
    return "-media-" in node_id  # signaling.workers.worker_settings names them so


def idle_rss(workers: int, redis_url: str, media_workers: int = 0) -> None:
    """Print the idle RSS of ``disco serve --workers W --media-workers M``: the supervisor,
    each worker and each media worker."""
    workdir = Path(tempfile.mkdtemp(prefix="disco-rss-"))
    prefix = f"disco-bench-{secrets.token_hex(4)}:"
    server = _start(workdir, bench_server.free_port(), workers, redis_url, prefix, media_workers)
    try:
        node_ids = asyncio.run(_nodes(redis_url, prefix, workers + media_workers))
        time.sleep(IDLE_S)  # started, and idle

        def sizes(media: bool) -> str:
            pids = [_pid_of(n, server.pid) for n in node_ids if is_media(n) == media]
            return ", ".join("{:.0f}/{:.0f}/{:.0f} MB".format(*memory_mb(p)) for p in pids)

        supervised = workers > 1 or media_workers > 0
        supervisor = f"; supervisor {rss_mb(server.pid):.0f} MB" if supervised else ""
        media = (f"; per media worker {sizes(True)}" if media_workers else "")
        print(f"disco serve --workers {workers} --media-workers {media_workers}: idle "
              f"RSS/PSS/USS per worker {sizes(False)}{media}{supervisor}", flush=True)
    finally:
        bench_server.stop(server)
        asyncio.run(_cleanup(redis_url, prefix))


def run(workers: int, rooms: int, seconds: float, redis_url: str, pin: bool, client_nice: int,
        media_workers: int = 0) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="disco-cluster-"))
    prefix = f"disco-bench-{secrets.token_hex(4)}:"
    port = bench_server.free_port()
    server = _start(workdir, port, workers, redis_url, prefix, media_workers)
    base = f"127.0.0.1:{port}"
    cores = os.cpu_count() or 1
    try:
        node_ids = asyncio.run(_nodes(redis_url, prefix, workers + media_workers))
        nodes = [Worker(n, _pid_of(n, server.pid)) for n in node_ids]
        hosts = [w for w in nodes if is_media(w.node_id)] or nodes
        if pin:
            for i, w in enumerate(nodes):
                w.cpu = i % cores
                os.sched_setaffinity(w.pid, {w.cpu})
        groups = [bench_server.setup_accounts(base, ROOM_SIZE) for _ in range(rooms)]
        time.sleep(1.0)  # let start-up and registration settle
        for w, rate in zip(nodes, _cpu_rates([w.pid for w in nodes], IDLE_S), strict=True):
            w.idle = rate
            w.rss_idle_mb = rss_mb(w.pid)
        room_ids = [f"group:{gid}" for gid, _ in groups]
        asyncio.run(_claim(redis_url, prefix, {
            room: hosts[r % len(hosts)].node_id for r, room in enumerate(room_ids)}))

        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        ready = ctx.Value("i", 0)
        window = ctx.Array("d", [0.0, 0.0])
        t0 = time.monotonic()
        procs = []
        for (_gid, tokens), room in zip(groups, room_ids, strict=True):
            jobs = [(token, "talker" if i < TALKERS_PER_ROOM else "listener", i)
                    for i, token in enumerate(tokens)]
            procs.append(ctx.Process(target=_clients, args=(
                base, jobs, room, t0, ready, window, out, client_nice)))
        for p in procs:
            p.start()
        total = rooms * ROOM_SIZE
        deadline = time.monotonic() + 60 + total
        while ready.value < total and time.monotonic() < deadline:
            time.sleep(0.1)
        holders = asyncio.run(_holders(redis_url, prefix, room_ids))
        for holder in holders:
            for w in nodes:
                if w.node_id == holder:
                    w.participants += ROOM_SIZE
        start = time.monotonic() + voice.WARMUP_S
        window[0], window[1] = start, start + seconds  # type: ignore[index]
        time.sleep(max(0.0, start - time.monotonic()))
        for w, rate in zip(nodes, _cpu_rates([w.pid for w in nodes], seconds), strict=True):
            w.busy = rate
        results: list[dict[str, Any]] = []
        for _ in procs:
            results += out.get(timeout=120)
        for p in procs:
            p.join(timeout=30)
    finally:
        bench_server.stop(server)
        asyncio.run(_cleanup(redis_url, prefix))
    errors = [r["error"] for r in results if r["error"]]
    expected = seconds / voice.FRAME_S
    frames = [r["packets_in_window"] / expected for r in results if not r["error"]]
    return {"workers": workers, "nodes": nodes, "errors": errors,
            "min_frames": min(frames) if frames else 0.0,
            "median_frames": sorted(frames)[len(frames) // 2] if frames else 0.0,
            "misplaced": sum(1 for h, r in zip(holders, range(rooms), strict=True)
                             if h != hosts[r % len(hosts)].node_id),
            "log": workdir / f"server-{workers}.log"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to compare, one run each (default 1 2)")
    parser.add_argument("--rooms", type=int, default=2,
                        help="rooms of 10 (the same load for every W; default 2: on 2 cores "
                             "the clients of more do not keep up beside the workers)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the W sequence this many times, alternating, and compare "
                             "the medians (a busy machine drifts; default 1)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin worker i to CPU i mod cores")
    parser.add_argument("--client-nice", type=int, default=0,
                        help="nice value of the client processes (default 0: the clients must "
                             "keep up for the workers' cost to mean anything)")
    parser.add_argument("--rss", action="store_true",
                        help="only start each W and print the idle RSS of every process")
    parser.add_argument("--media-workers", type=int, default=0, metavar="M",
                        help="add M media workers to every run; rooms go to them (default 0)")
    parser.add_argument("--redis", default=os.environ.get("DISCO_TEST_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args()
    if any(w < 1 for w in args.workers) or min(args.rooms, args.rounds) < 1 or args.seconds <= 0:
        parser.error("--workers, --rooms, --rounds and --seconds must be positive")
    if args.media_workers < 0:
        parser.error("--media-workers must be 0 or more")

    if args.rss:
        for workers in args.workers:
            idle_rss(workers, args.redis, args.media_workers)
        return
    print(f"{args.rooms} rooms of {ROOM_SIZE} ({TALKERS_PER_ROOM} talkers each), "
          f"{args.seconds:.0f} s window, {os.cpu_count()} cores, clients at nice "
          f"{args.client_nice}", flush=True)
    held: dict[int, list[float]] = {w: [] for w in args.workers}
    for workers in [w for _ in range(args.rounds) for w in args.workers]:
        row = run(workers, args.rooms, args.seconds, args.redis, args.pin, args.client_nice,
                  args.media_workers)
        notes = ""
        if row["errors"]:
            notes += f", {len(row['errors'])} client errors"
        if row["misplaced"]:
            notes += f", {row['misplaced']} rooms not where claimed"
        print(f"\n--workers {workers}: frames received, worst client "
              f"{row['min_frames'] * 100:.1f}%, median {row['median_frames'] * 100:.1f}%"
              f"{notes}")
        print(f"  {'worker':>18}{'cpu':>5}{'idle RSS':>10}{'idle':>7}{'participants':>14}"
              f"{'busy':>7}{'per participant':>17}{'held at 80%':>13}")
        for w in row["nodes"]:
            per = (w.busy - w.idle) / w.participants if w.participants else float("nan")
            print(f"  {w.node_id:>18}{w.cpu if w.cpu is not None else '-':>5}"
                  f"{w.rss_idle_mb:>8.0f}MB{w.idle * 100:>6.1f}%{w.participants:>14}"
                  f"{w.busy * 100:>6.1f}%{per * 100:>16.2f}%{w.held():>13.0f}")
        for err in row["errors"][:3]:
            print(f"  client error: {err}")
        total = sum(w.held() for w in row["nodes"] if w.participants)
        kept = row["median_frames"] >= FRAMES_OK and not row["errors"] and not row["misplaced"]
        if kept:
            held[workers].append(total)
        print(f"  machine capacity (sum over workers): {total:.0f} participants at "
              f"<= {CPU_LIMIT:.0%} of a core each"
              f"{'' if kept else f' (not counted: median client under {FRAMES_OK:.0%})'}",
              flush=True)
    median = {w: statistics.median(v) for w, v in held.items() if v}
    print()
    for workers, total in median.items():
        line = (f"W = {workers}: machine capacity {total:.0f} (median of the "
                f"{len(held[workers])} counted runs)")
        if 1 in median and workers != 1:
            line += (f", scaling efficiency {total:.0f} / ({workers} x {median[1]:.0f}) = "
                     f"{total / (workers * median[1]):.2f}")
        print(line)
    print("relay's added signaling round trip: python -m bench.relay")


if __name__ == "__main__":
    main()
