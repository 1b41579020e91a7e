"""Voice capacity of one server process: `disco serve` + N WebRTC clients.

    .venv/bin/python -m bench.voice [--sizes 10,20,30,40] [--seconds 8] [--workers 4]

Starts ``disco serve`` on 127.0.0.1 (fresh SQLite, ICE host 127.0.0.1 only, a
plans file without a member limit), registers N users into one group, and for
each N runs N client peers in ``--workers`` other processes: 3 talk (tone
bursts, one talker at a time, so each onset is unambiguous), the rest listen
while sending silence (full duplex, 50 packets/s each way, like a muted-mic
browser). Reported per N:

* server CPU: the server process's user+system time over the measurement
  window (from /proc), as % of one core, and per participant;
* frames: the worst listener's received packets / expected (50 per second);
* added latency: tone onset sent by a talker -> onset received by probe
  listeners, minus the same measurement over a direct client-to-client
  connection (``baseline``), p50/p99. Clients and the server use aiortc's
  receive path with the 80 ms prefetch removed (see ``sfu.peer``), so what is
  left is the server's: jitter slot, tick wait, mix, encode, send.

The largest N with server CPU <= 80% of a core and every listener >= 99% of
frames is printed at the end. Clients are made cheap so that they, not the
server, are not the bottleneck on a small machine: listeners send one
pre-encoded silent Opus frame and (except two probes) count packets without
decoding them. The numbers are only as good as the machine is idle: on a
shared 2-core box, client processes compete with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TALKERS = 3
CYCLE_S = 1.5
"""Talker k sends a tone during [k * 0.5, k * 0.5 + 0.25) of every cycle."""
SLOT_S = 0.5
BURST_S = 0.25
TONES_HZ = (440.0, 660.0, 990.0)
WARMUP_S = 1.0
CONNECT_TIMEOUT_S = 60.0
ONSET_DBOV = -40.0
PROBES = 2
FRAME_S = 0.02
CPU_LIMIT = 0.80
FRAMES_LIMIT = 0.99


# --- client side (runs in worker processes) ------------------------------------------------


@dataclass
class ClientResult:
    role: str
    packets_in_window: int = 0
    onsets_sent: list[float] = field(default_factory=list)
    onsets_heard: list[float] = field(default_factory=list)
    error: str | None = None


def _patch_loopback() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def _count_only_buffer(arrivals: list[float], decode: bool) -> Any:
    """A receiver jitter buffer that records arrival times, passing frames on only if ``decode``."""
    from aiortc.jitterbuffer import JitterFrame

    from sfu.peer import _PassThroughBuffer

    class Counting(_PassThroughBuffer):
        def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
            arrivals.append(time.monotonic())
            pli, frame = super().add(packet)
            return pli, frame if decode else None

    return Counting()


def _silence_track() -> Any:
    """An audio track sending one pre-encoded silent Opus frame every 20 ms."""
    import numpy as np
    from aiortc.mediastreams import MediaStreamTrack

    from sfu.codec import OpusEncoder, make_packet

    payload = OpusEncoder().encode(np.zeros(960, dtype=np.int16))

    class Silence(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._pts = 0
            self._start: float | None = None

        async def recv(self) -> Any:
            if self._start is None:
                self._start = time.monotonic()
            else:
                wait = self._start + self._pts / 48_000 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            packet = make_packet(payload, self._pts)
            self._pts += 960
            return packet

    return Silence()


async def _schedule_bursts(tone: Any, index: int, t0: float, end: float) -> None:
    """Talker ``index`` sends its tone in its slot of each cycle, silence otherwise."""
    while time.monotonic() < end:
        now = time.monotonic()
        phase = (now - t0) % CYCLE_S
        start = index * SLOT_S
        if start <= phase < start + BURST_S:
            tone.frequency_hz = TONES_HZ[index % len(TONES_HZ)]
            await asyncio.sleep(start + BURST_S - phase)
        else:
            tone.frequency_hz = None
            wait = (start - phase) % CYCLE_S
            await asyncio.sleep(min(wait, 0.5) if wait > 0 else 0.005)


async def _detect_onsets(track: Any, heard: list[float]) -> None:
    from aiortc.mediastreams import MediaStreamError

    from sfu.levels import levels_dbov
    from sfu.peer import to_mono

    loud = False
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        level = float(levels_dbov(to_mono(frame))[0])
        if level >= ONSET_DBOV and not loud:
            heard.append(time.monotonic())
        loud = level >= ONSET_DBOV - 10 if loud else level >= ONSET_DBOV


async def _run_client(
    base: str, token: str, room: str, role: str, index: int, t0: float, ready: Any, window: Any
) -> ClientResult:
    import websockets
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from tests.rtc_helpers import ToneTrack

    result = ClientResult(role=role)
    arrivals: list[float] = []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks: list[asyncio.Task[Any]] = []
    tone = None
    try:
        async with websockets.connect(f"ws://{base}/ws?token={token}", max_size=2**22) as ws:

            async def expect(kind: str) -> dict[str, Any]:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg.get("type") == kind:
                        return msg
                    if msg.get("type") == "error":
                        raise RuntimeError(f"server error: {msg}")

            await expect("welcome")
            await ws.send(json.dumps({"type": "join", "room": room}))
            await expect("joined")
            if role == "talker":
                tone = ToneTrack(None, amplitude=0.25)
                pc.addTrack(tone)
            else:
                pc.addTrack(_silence_track())
            decode = role in ("talker", "probe")
            for t in pc.getTransceivers():
                t.receiver._RTCRtpReceiver__jitter_buffer = _count_only_buffer(arrivals, decode)

            @pc.on("track")
            def on_track(track: Any) -> None:
                if role == "probe":
                    tasks.append(asyncio.ensure_future(_detect_onsets(track, result.onsets_heard)))
                elif decode:
                    tasks.append(asyncio.ensure_future(_drain(track)))

            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(
                json.dumps({"type": "offer", "room": room, "sdp": pc.localDescription.sdp})
            )
            answer = await expect("answer")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            if tone is not None:
                tasks.append(asyncio.ensure_future(_schedule_bursts(tone, index, t0, 1e18)))
            tasks.append(asyncio.ensure_future(_drain_ws(ws)))
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            # arrivals are appended from aiortc's receive path: polling is simplest
            while not arrivals and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if not arrivals:
                raise TimeoutError("no audio from the server")
            with ready.get_lock():
                ready.value += 1
            # the parent opens the measurement window once everybody hears audio
            # ``window`` is shared memory written by another process: poll it
            while window[1] == 0.0 or time.monotonic() < window[1]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            result.packets_in_window = sum(1 for a in arrivals if window[0] <= a < window[1])
            if tone is not None:
                result.onsets_sent = [t for t, _ in tone.onsets]
    except Exception as exc:  # reported, not raised: one bad client must not hide the rest
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await pc.close()
    return result


async def _drain(track: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


async def _drain_ws(ws: Any) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def _worker(
    base: str,
    jobs: list[tuple[str, str, int]],
    room: str,
    t0: float,
    ready: Any,
    window: Any,
    out: Any,
) -> None:
    _patch_loopback()

    async def main() -> list[ClientResult]:
        return list(
            await asyncio.gather(
                *(
                    _run_client(base, token, room, role, index, t0, ready, window)
                    for token, role, index in jobs
                )
            )
        )

    out.put([r.__dict__ for r in asyncio.run(main())])


def _direct_worker(seconds: float, out: Any) -> None:
    """Baseline: the same talker and probe, connected directly (no server)."""
    _patch_loopback()

    async def main() -> list[float]:
        from aiortc import RTCConfiguration, RTCPeerConnection

        from tests.rtc_helpers import ToneTrack

        talker = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        probe = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tone = ToneTrack(None, amplitude=0.25)
        talker.addTrack(tone)
        probe.addTrack(_silence_track())
        heard: list[float] = []
        tasks: list[asyncio.Task[Any]] = []
        probe.on("track", lambda tr: tasks.append(asyncio.ensure_future(_detect_onsets(tr, heard))))
        await talker.setLocalDescription(await talker.createOffer())
        await probe.setRemoteDescription(talker.localDescription)
        for t in probe.getTransceivers():
            t.receiver._RTCRtpReceiver__jitter_buffer = _count_only_buffer([], True)
        await probe.setLocalDescription(await probe.createAnswer())
        await talker.setRemoteDescription(probe.localDescription)
        t0 = time.monotonic() + 1.0
        end = t0 + seconds
        tasks.append(asyncio.ensure_future(_schedule_bursts(tone, 0, t0, end)))
        await asyncio.sleep(end - time.monotonic())
        sent = [t for t, _ in tone.onsets]
        for task in tasks:
            task.cancel()
        await talker.close()
        await probe.close()
        return _latencies(sent, heard)

    out.put(asyncio.run(main()))


# --- analysis ----------------------------------------------------------------------------


def _latencies(sent: list[float], heard: list[float]) -> list[float]:
    """Each heard onset minus the latest sent onset before it (within one burst slot)."""
    sent = sorted(sent)
    out = []
    for h in heard:
        before = [s for s in sent if s <= h]
        if before and h - before[-1] < SLOT_S:
            out.append(h - before[-1])
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


# --- server and accounts --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(workdir: Path, port: int, cpu: int | None = None) -> subprocess.Popen[bytes]:
    plans = workdir / "plans.json"
    plans.write_text(
        json.dumps(
            {
                "default": "bench",
                "plans": {
                    "bench": {
                        "max_group_members": 1000,
                        "voice": True,
                        "music": True,
                        "history_days": 1,
                        "max_places": 1,
                    }
                },
            }
        )
    )
    env = {
        **os.environ,
        "DISCO_DEV": "true",
        "DISCO_PORT": str(port),
        "DISCO_HOST": "127.0.0.1",
        "DISCO_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        "DISCO_JWT_SECRET": "bench-" + secrets.token_hex(16),
        "DISCO_RTC_HOST_ADDRESSES": "127.0.0.1",
        "DISCO_PLANS_FILE": str(plans),
        "DISCO_UPLOAD_DIR": str(workdir / "uploads"),
        "DISCO_LOG_LEVEL": "warning",
    }
    disco = shutil.which("disco", path=str(Path(sys.executable).parent)) or "disco"
    log = (workdir / "server.log").open("wb")
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen(
        [disco, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=pin,
    )


def _setup_accounts(base: str, n: int) -> tuple[int, list[str]]:
    import httpx

    with httpx.Client(base_url=f"http://{base}", timeout=30) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.get("/api/auth/me")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        tokens = []
        run = secrets.token_hex(3)
        for i in range(n):
            r = http.post(
                "/api/auth/register",
                json={"username": f"b{run}u{i}", "password": "bench-password-1"},
            )
            r.raise_for_status()
            tokens.append(r.json()["access_token"])
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        group = http.post("/api/groups", json={"name": "bench"}, headers=auth)
        group.raise_for_status()
        gid = int(group.json().get("id") or group.json()["group"]["id"])
        for token in tokens[1:]:
            code = http.post(f"/api/groups/{gid}/invites", headers=auth)
            code.raise_for_status()
            for attempt in range(20):
                # The invite route's session commits after the response is sent,
                # so an immediate accept can race it: retry briefly on 404.
                accepted = http.post(
                    f"/api/invites/{code.json()['code']}/accept",
                    headers={"Authorization": f"Bearer {token}"},
                )
                if accepted.status_code != 404 or attempt == 19:
                    if accepted.is_error:
                        raise RuntimeError(f"invite accept: {accepted.status_code} {accepted.text}")
                    break
                time.sleep(0.05)
    return gid, tokens


# --- one measurement ----------------------------------------------------------------------


def measure(
    base: str, server_pid: int, gid: int, tokens: list[str], seconds: float, workers: int
) -> dict[str, Any]:
    n = len(tokens)
    roles = ["talker"] * TALKERS + ["probe"] * PROBES + ["listener"] * (n - TALKERS - PROBES)
    jobs = [(tokens[i], roles[i], i) for i in range(n)]
    t0 = time.monotonic()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Value("i", 0)
    window = ctx.Array("d", [0.0, 0.0])
    procs = [
        ctx.Process(
            target=_worker, args=(base, jobs[w::workers], f"group:{gid}", t0, ready, window, out)
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60 + n
    while ready.value < n and time.monotonic() < deadline:
        time.sleep(0.1)
    start = time.monotonic() + WARMUP_S
    window[0], window[1] = start, start + seconds  # type: ignore[index]
    time.sleep(max(0.0, window[0] - time.monotonic()))
    cpu0, wall0 = _cpu_seconds(server_pid), time.monotonic()
    time.sleep(max(0.0, window[1] - time.monotonic()))
    cpu1, wall1 = _cpu_seconds(server_pid), time.monotonic()
    results: list[dict[str, Any]] = []
    for _ in procs:
        results += out.get(timeout=120)
    for p in procs:
        p.join(timeout=30)
    errors = [r["error"] for r in results if r["error"]]
    expected = seconds / FRAME_S
    ratios = [r["packets_in_window"] / expected for r in results if not r["error"]]
    sent = [t for r in results for t in r["onsets_sent"]]
    heard = [t for r in results if r["role"] == "probe" for t in r["onsets_heard"]]
    lat = _latencies(sent, heard)
    cpu = (cpu1 - cpu0) / (wall1 - wall0)
    by_role = {
        role: min(
            (
                r["packets_in_window"] / expected
                for r in results
                if r["role"] == role and not r["error"]
            ),
            default=float("nan"),
        )
        for role in ("talker", "probe", "listener")
    }
    if os.environ.get("BENCH_VERBOSE"):
        import httpx

        text = httpx.get(f"http://{base}/metrics", timeout=10).text
        print(
            "  ",
            [
                line
                for line in text.splitlines()
                if line.startswith("disco_sfu_") and "_created" not in line and "bucket" not in line
            ],
        )
        print("   min frames by role:", {k: round(v, 3) for k, v in by_role.items()})
        print("   latencies ms:", [round(x * 1000, 1) for x in sorted(lat)])
    return {
        "n": n,
        "cpu": cpu,
        "cpu_per_participant": cpu / n,
        "min_frames": min(ratios) if ratios else 0.0,
        "errors": errors,
        "latency_p50": _percentile(lat, 0.5),
        "latency_p99": _percentile(lat, 0.99),
        "onsets": len(lat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,20,30,40")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2)))
    parser.add_argument(
        "--pin", action="store_true",
        help="run the server on CPU 0 and the clients on the other CPUs, so that client "
        "load does not show up as server latency (needs 2+ CPUs)",
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_direct_worker, args=(min(args.seconds, 6.0), q))
    p.start()
    baseline = q.get(timeout=120)
    p.join()
    base_p50 = _percentile(baseline, 0.5)
    print(
        f"baseline (direct client->client): onset latency p50 {base_p50 * 1000:.1f} ms, "
        f"p99 {_percentile(baseline, 0.99) * 1000:.1f} ms over {len(baseline)} onsets"
    )

    workdir = Path(tempfile.mkdtemp(prefix="disco-bench-"))
    port = _free_port()
    server = _start_server(workdir, port, cpu=0 if args.pin else None)
    if args.pin:  # this process and the client workers it spawns: the other CPUs
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    base = f"127.0.0.1:{port}"
    rows = []
    try:
        gid, tokens = _setup_accounts(base, max(sizes))
        print(
            f"{'N':>4}{'server CPU':>12}{'per participant':>17}{'min frames':>12}"
            f"{'added p50':>11}{'added p99':>11}{'onsets':>8}"
        )
        for n in sizes:
            row = measure(base, server.pid, gid, tokens[:n], args.seconds, args.workers)
            rows.append(row)
            print(
                f"{n:>4}{row['cpu'] * 100:>11.1f}%{row['cpu_per_participant'] * 100:>16.2f}%"
                f"{row['min_frames'] * 100:>11.1f}%"
                f"{(row['latency_p50'] - base_p50) * 1000:>9.1f}ms"
                f"{(row['latency_p99'] - base_p50) * 1000:>9.1f}ms{row['onsets']:>8}",
                flush=True,
            )
            for err in row["errors"][:3]:
                print(f"     client error: {err}")
            time.sleep(2.0)  # let the server drop the previous clients
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = [
        r
        for r in rows
        if r["cpu"] <= CPU_LIMIT and r["min_frames"] >= FRAMES_LIMIT and not r["errors"]
    ]
    best = max(ok, key=lambda r: r["n"], default=None)
    if best is None:
        print("no size met the limits")
    else:
        per = best["cpu_per_participant"]
        print(
            f"largest N at <= {CPU_LIMIT:.0%} of a core with every listener >= "
            f"{FRAMES_LIMIT:.0%} of frames: {best['n']} (server CPU per participant "
            f"{per * 100:.2f}% of a core -> ~{1 / per:.0f} participants per core)"
        )
    print(f"server log: {workdir / 'server.log'}")


if __name__ == "__main__":
    main()
