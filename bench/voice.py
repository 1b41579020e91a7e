"""Voice capacity of one server process: `disco serve` + N WebRTC clients.

    .venv/bin/python -m bench.voice [--sizes 10,20,30,40] [--seconds 8] [--workers 4]
                                    [--dtx off|on|both] [--no-levels] [--pin] [--media]

Starts ``disco serve`` on 127.0.0.1 (fresh SQLite, ICE host 127.0.0.1 only, a
plans file without a member limit), registers N users into one group, and for
each N runs N client peers in other processes: 3 talkers send tone bursts (one
talker at a time, so each onset is unambiguous), 4 probes and the rest listen
while sending silence (full duplex, 50 packets/s each way, like a muted-mic
browser). Reported per N:

* server CPU: the server process's user+system time over the measurement
  window (from /proc), as % of one core, and per participant;
* frames: the worst listener's received packets / expected (50 per second);
* added latency: the time a talker's first tone packet is sent -> the time the
  first loud packet comes off a probe's socket, minus the same over a direct
  client-to-client connection (``baseline``, ~1 ms), p50/p99 over every
  onset in the window (about 13 a second), with how many of the expected
  onsets were heard. What is left is the server's: receive, decode, jitter
  slot, wait for the tick, mix, encode, send;
* the server's own view of its two waits, from its ``/metrics`` histograms
  over the window (p99 as the upper bound of the bucket that holds it): a
  complete inbound frame waiting for the tick (``jitter``), and a listener's
  packet waiting for its sender after the tick (``send``); and how late the
  room's clock woke for its ticks (``lag``: the event loop's lag, which a
  packet read behind it also waited).

The largest N with server CPU <= 80% of a core and every listener >= 99% of
frames is printed at the end, for each DTX mode.

Clients behave as browsers do after Disco's answer: every packet carries the
RFC 6464 audio level of its frame (``ssrc-audio-level``; ``--no-levels`` for
clients that send none, which the server must then decode to rank), and with
``--dtx on`` (``both``, the default, measures each N without then with DTX)
a silent sender sends Opus DTX: one TOC-only packet (1 byte, what libopus
emits in DTX) when it falls silent and one every 400 ms after, so a listener
sends 2.5 packets/s instead of 50, and a talker between its bursts likewise.
The server's downlink is the same in both modes: 50 packets/s to everyone.

Clients are made cheap and their clocks honest, so that on a small machine
they neither starve the server nor add their own delays to its figures:
talkers encode on their event loop and hand aiortc finished packets (no
encoder thread between the timestamp and the socket); probes decode in the
receiver, timestamping packets as they arrive; listeners send one
pre-encoded silent frame and only count packets. Talkers and probes share a
process of their own; the listeners' ``--workers`` processes run at a lower
priority (nice 10). ``--pin`` puts the server on CPU 0 and every client on
the others. The numbers are only as good as the machine is idle.

``--media`` runs ``disco serve --media-workers 1`` instead (Redis at
``DISCO_TEST_REDIS_URL``, a key prefix of its own): the room is hosted by the
media worker (``disco media``: no HTTP, no database) and every member is
relayed to it by the whole worker their WebSocket reached. Server CPU is then
the two processes' together (both pinned to CPU 0 with ``--pin``), printed
apart too, and the waits come from the media worker's ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import server

TALKERS = 3
SLOT_S = 0.3
BURST_S = 0.15
CYCLE_S = TALKERS * SLOT_S
"""Talker k sends a tone during [k * SLOT_S, k * SLOT_S + BURST_S) of every cycle."""
TONES_HZ = (440.0, 660.0, 990.0)
WARMUP_S = 1.0
WARMUP_PER_PARTICIPANT_S = 0.03
"""The window opens this much later per participant (6 s at N = 200): each sender's
playout depth follows the spread of its last 100 packets' transits, and the joins'
stalls (200 handshakes in a few seconds) must have left that window first."""
CONNECT_TIMEOUT_S = 60.0
ONSET_DBOV = -40.0
PROBES = 4
LISTENER_NICE = 10
"""Listener processes yield the client CPU to the talkers' and probes' process."""
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


@dataclass(frozen=True)
class ClientMode:
    """How the load clients send (the same for Disco and Janus)."""

    dtx: bool = False
    """Silent senders send one DTX packet per 400 ms (as a browser with usedtx=1)."""
    levels: bool = True
    """Every packet carries its frame's RFC 6464 level (as browsers send it)."""


DTX_REFRESH_FRAMES = 20
"""In DTX a silent sender refreshes every 20 frames (400 ms), as WebRTC does."""


def _patch_loopback() -> None:
    from protocol import aiortc_compat

    aiortc_compat.install()
    aiortc_compat.set_host_addresses(("127.0.0.1",))


def _burst_on(index: int, t: float, t0: float) -> bool:
    """Is talker ``index`` in its tone burst at time ``t``? (one talker at a time)"""
    phase = (t - t0) % CYCLE_S
    start = index * SLOT_S
    return start <= phase < start + BURST_S


class _OnsetDetector:
    """Decodes Opus payloads as they arrive and timestamps each silence -> tone switch."""

    def __init__(self, heard: list[float]) -> None:
        from sfu.inbound import MonoOpusDecoder

        self._decoder = MonoOpusDecoder()
        self._heard = heard
        self._loud = False

    def __call__(self, payload: bytes, arrived: float) -> None:
        from sfu.levels import levels_dbov

        for pcm in self._decoder.decode(payload):
            level = float(levels_dbov(pcm)[0])
            if level >= ONSET_DBOV and not self._loud:
                self._heard.append(arrived)
            self._loud = level >= ONSET_DBOV - 10 if self._loud else level >= ONSET_DBOV


def _arrival_sink(arrivals: list[float], detector: _OnsetDetector | None) -> Any:
    """A receiver's RTP packets: record arrival times, pass nothing on.

    Nothing reaches aiortc's decoder thread: a probe decodes here, at arrival,
    so its onset times are when the packet came off the socket, not when a
    busy client got round to a decoded frame.
    """

    def sink(packet: Any, mime: str) -> None:
        now = time.monotonic()
        arrivals.append(now)
        if detector is not None:
            detector(packet.payload, now)

    return sink


def _install_arrival_buffers(
    pc: Any, arrivals: list[float], detector: _OnsetDetector | None
) -> None:
    from protocol import aiortc_compat

    for t in pc.getTransceivers():
        # counters: the client takes the server's packets on the fast receive path too
        # (cheaper clients); its receiver reports say "no loss" and go out every 5 s,
        # as a browser's do (aiortc_compat.rtcp.AUDIO_RTCP_INTERVAL_S).
        aiortc_compat.take_rtp(t.receiver, _arrival_sink(arrivals, detector), _no_loss)


def _no_loss() -> Any:
    from protocol import aiortc_compat

    return aiortc_compat.ReceiveCounters(0, 0, 0, 0, 0.0)


def _dtx_payload() -> bytes:
    """What libopus sends in DTX: encode silence with DTX on until it emits a TOC only."""
    import numpy as np

    from protocol.opus import Encoder

    encoder = Encoder(32_000, dtx=True)
    for _ in range(50):
        payload = encoder.encode(np.zeros(960, dtype=np.int16))
        if len(payload) <= 2:
            return payload
    raise RuntimeError("libopus never entered DTX on silence")


TONE_DBOV = -15
"""The RFC 6464 level of the talkers' sine at 1/4 of full scale: 20 log10(0.25 / sqrt 2)."""


def _opus_track(index: int | None, t0: float, onsets: list[float] | None = None,
                dtx: bool = False) -> Any:
    """An audio track of Opus packets, 20 ms apart: silence, or talker ``index``'s bursts.

    Packets are encoded here, on the loop, and sent the moment ``recv``
    returns (aiortc packs ``av.Packet``s instead of encoding them in its
    thread pool), so the onset time recorded here is the send time. A
    listener's track is one pre-encoded silent frame repeated. With ``dtx``
    silence is a TOC-only packet, sent once then every 400 ms. The track's
    ``level_dbov`` is the level of the frame ``recv`` just returned (for
    ``aiortc_compat.send_audio_level``).
    """
    import numpy as np
    from aiortc.mediastreams import MediaStreamTrack

    from sfu.codec import OpusEncoder, make_packet

    encoder = OpusEncoder()
    silence = encoder.encode(np.zeros(960, dtype=np.int16))
    dtx_payload = _dtx_payload() if dtx else b""
    freq = TONES_HZ[index % len(TONES_HZ)] if index is not None else 0.0
    samples = np.arange(48_000 + 960)
    tone = (0.25 * 32_767 * np.sin(2 * np.pi * freq * samples / 48_000)).astype(np.int16)

    class Packets(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._pts = 0
            self._start: float | None = None
            self._was_on = False
            self._silent_run = 0
            self.level_dbov = -127

        async def recv(self) -> Any:
            while True:
                if self._start is None:
                    self._start = time.monotonic()
                else:
                    wait = self._start + self._pts / 48_000 - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                now = time.monotonic()
                on = index is not None and _burst_on(index, now, t0)
                pts = self._pts
                self._pts += 960
                if on:
                    offset = pts % 48_000  # a whole-Hz tone repeats every second
                    payload = encoder.encode(tone[offset:offset + 960])
                    if not self._was_on and onsets is not None:
                        onsets.append(now)
                    self._silent_run = 0
                elif dtx:
                    payload = dtx_payload
                    self._silent_run += 1
                else:
                    payload = encoder.encode(np.zeros(960, dtype=np.int16)) \
                        if index is not None else silence
                self._was_on = on
                if on or not dtx or self._silent_run % DTX_REFRESH_FRAMES == 1:
                    self.level_dbov = TONE_DBOV if on else -127
                    return make_packet(payload, pts)

    return Packets()


def add_track(pc: Any, role: str, index: int, t0: float, result: ClientResult,
              mode: ClientMode) -> None:
    """The client's outgoing track (a talker's bursts or silence), as ``mode`` says."""
    from protocol import aiortc_compat

    talker = index if role == "talker" else None
    track = _opus_track(talker, t0, result.onsets_sent, dtx=mode.dtx)
    sender = pc.addTrack(track)
    if mode.levels:
        aiortc_compat.send_audio_level(sender, lambda: track.level_dbov)


async def _run_client(
    base: str, token: str, room: str, role: str, index: int, t0: float, ready: Any, window: Any,
    mode: ClientMode,
) -> ClientResult:
    import websockets
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    result = ClientResult(role=role)
    arrivals: list[float] = []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks: list[asyncio.Task[Any]] = []
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
            add_track(pc, role, index, t0, result, mode)
            detector = _OnsetDetector(result.onsets_heard) if role == "probe" else None
            _install_arrival_buffers(pc, arrivals, detector)

            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(
                json.dumps({"type": "offer", "room": room, "sdp": pc.localDescription.sdp})
            )
            answer = await expect("answer")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            tasks.append(asyncio.ensure_future(_drain_ws(ws)))
            await wait_until_heard(arrivals, ready, window, result)
    except Exception as exc:  # reported, not raised: one bad client must not hide the rest
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await pc.close()
    return result


async def wait_until_heard(
    arrivals: list[float], ready: Any, window: Any, result: ClientResult
) -> None:
    """Say ready once audio arrives, then count the packets in the parent's window."""
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
    nice: int = 0,
    mode: ClientMode = ClientMode(),
) -> None:
    _patch_loopback()
    if nice:
        os.nice(nice)

    async def main() -> list[ClientResult]:
        return list(
            await asyncio.gather(
                *(
                    _run_client(base, token, room, role, index, t0, ready, window, mode)
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

        t0 = time.monotonic() + 1.0
        talker = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        probe = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sent: list[float] = []
        heard: list[float] = []
        talker.addTrack(_opus_track(0, t0, sent))
        probe.addTrack(_opus_track(None, t0))
        await talker.setLocalDescription(await talker.createOffer())
        await probe.setRemoteDescription(talker.localDescription)
        _install_arrival_buffers(probe, [], _OnsetDetector(heard))
        await probe.setLocalDescription(await probe.createAnswer())
        await talker.setRemoteDescription(probe.localDescription)
        await asyncio.sleep(t0 + seconds - time.monotonic())
        await talker.close()
        await probe.close()
        return _latencies(sent, heard)

    out.put(asyncio.run(main()))


# --- analysis ----------------------------------------------------------------------------


def _latencies(sent: list[float], heard: list[float]) -> list[float]:
    """For each sent onset, the first onset one listener heard after it (within a slot).

    A burst heard with a gap in it shows a second onset; only the first
    counts, so a glitch mid-burst is not mistaken for a late onset. A sent
    onset nobody heard within the slot gives nothing (the caller counts them).
    """
    heard = sorted(heard)
    out = []
    for s in sorted(sent):
        first = next((h for h in heard if h >= s), None)
        if first is not None and first - s < SLOT_S:
            out.append(first - s)
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _wait_buckets(base: str) -> dict[str, dict[float, float]]:
    """The server's wait histograms (cumulative counts per upper bound) from /metrics."""
    import httpx

    metric = {"jitter": "disco_sfu_jitter_wait_seconds", "send": "disco_sfu_send_wait_seconds",
              "lag": "disco_sfu_clock_lag_seconds"}
    out: dict[str, dict[float, float]] = {name: {} for name in metric}
    for line in httpx.get(f"http://{base}/metrics", timeout=10).text.splitlines():
        for name, full in metric.items():
            prefix = f'{full}_bucket{{le="'
            if line.startswith(prefix):
                le, count = line[len(prefix):].split('"} ')
                out[name][float(le)] = float(count)
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of what was observed in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= q * counts[-1])


def measure(
    base: str, server_pid: int, gid: int, tokens: list[str], seconds: float, workers: int,
    worker: Callable[..., None] | None = None, mode: ClientMode = ClientMode(),
    relay_pid: int | None = None, metrics: str | None = None,
) -> dict[str, Any]:
    """One size: N clients (``worker`` runs them; Disco's by default) for ``seconds``.

    ``relay_pid``: a whole worker relaying to the media worker ``server_pid`` (its CPU
    counts too); ``metrics``: where ``/metrics`` is (host:port; ``base`` by default)."""
    disco = worker is None
    target = _worker if worker is None else worker
    n = len(tokens)
    roles = ["talker"] * TALKERS + ["probe"] * PROBES + ["listener"] * (n - TALKERS - PROBES)
    jobs = [(tokens[i], roles[i], i) for i in range(n)]
    measuring = [j for j in jobs if j[1] != "listener"]
    listening = [j for j in jobs if j[1] == "listener"]
    t0 = time.monotonic()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Value("i", 0)
    window = ctx.Array("d", [0.0, 0.0])
    room = f"group:{gid}"
    # Talkers and probes get a process of their own: their timestamps must
    # not wait behind twenty listeners' packets on a shared event loop.
    procs = [ctx.Process(target=target,
                         args=(base, measuring, room, t0, ready, window, out, 0, mode))]
    procs += [
        ctx.Process(
            target=target,
            args=(base, listening[w::workers], room, t0, ready, window, out, LISTENER_NICE,
                  mode),
        )
        for w in range(workers)
        if listening[w::workers]
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60 + n
    while ready.value < n and time.monotonic() < deadline:
        time.sleep(0.1)
    start = time.monotonic() + WARMUP_S + n * WARMUP_PER_PARTICIPANT_S
    window[0], window[1] = start, start + seconds  # type: ignore[index]
    time.sleep(max(0.0, window[0] - time.monotonic()))
    metrics = metrics or base
    waits0 = _wait_buckets(metrics) if disco else {"jitter": {}, "send": {}, "lag": {}}
    pids = [server_pid] + ([relay_pid] if relay_pid is not None else [])
    cpu0, wall0 = [server.cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(max(0.0, window[1] - time.monotonic()))
    cpu1, wall1 = [server.cpu_seconds(p) for p in pids], time.monotonic()
    waits1 = _wait_buckets(metrics) if disco else {"jitter": {}, "send": {}, "lag": {}}
    results: list[dict[str, Any]] = []
    for _ in procs:
        results += out.get(timeout=120)
    for p in procs:
        p.join(timeout=30)
    errors = [r["error"] for r in results if r["error"]]
    expected = seconds / FRAME_S
    ratios = [r["packets_in_window"] / expected for r in results if not r["error"]]
    # onsets sent in the window, but not so late that their echo falls after it
    w0, w1 = window[0], window[1] - SLOT_S  # type: ignore[index]
    sent = [t for r in results for t in r["onsets_sent"] if w0 <= t < w1]
    lat = [
        latency
        for r in results
        if r["role"] == "probe"
        for latency in _latencies(sent, r["onsets_heard"])
    ]
    cpus = [(b - a) / (wall1 - wall0) for a, b in zip(cpu0, cpu1, strict=True)]
    cpu = sum(cpus)
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
    if os.environ.get("BENCH_VERBOSE") and disco:
        import httpx

        text = httpx.get(f"http://{metrics}/metrics", timeout=10).text
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
        "cpu_relay": cpus[1] if len(cpus) > 1 else 0.0,
        "cpu_per_participant": cpu / n,
        "min_frames": min(ratios) if ratios else 0.0,
        "errors": errors,
        "latency_p50": _percentile(lat, 0.5),
        "latency_p99": _percentile(lat, 0.99),
        "onsets": len(lat),
        "onsets_expected": len(sent) * PROBES,
        "jitter_wait_p99": _bucket_quantile(waits0["jitter"], waits1["jitter"], 0.99),
        "send_wait_p99": _bucket_quantile(waits0["send"], waits1["send"], 0.99),
        "clock_lag_p99": _bucket_quantile(waits0["lag"], waits1["lag"], 0.99),
    }


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtx", choices=("off", "on", "both"), default="both",
                        help="silent clients send Opus DTX (one packet per 400 ms); both: "
                        "each size without, then with")
    parser.add_argument("--no-levels", action="store_true",
                        help="clients send no RFC 6464 audio level (the server decodes all)")


def client_modes(args: argparse.Namespace) -> list[ClientMode]:
    dtx = {"off": [False], "on": [True], "both": [False, True]}[args.dtx]
    return [ClientMode(dtx=d, levels=not args.no_levels) for d in dtx]


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
    parser.add_argument(
        "--media", action="store_true",
        help="host the room on a media worker (disco serve --media-workers 1, Redis at "
        "DISCO_TEST_REDIS_URL); server CPU is both workers'",
    )
    add_mode_arguments(parser)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    modes = client_modes(args)

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
    port = server.free_port()
    media = server.MediaWorker(os.environ.get("DISCO_TEST_REDIS_URL", server.DEFAULT_REDIS),
                               f"disco-bench-{secrets.token_hex(4)}:", server.free_port()
                               ) if args.media else None
    proc = server.start_server(workdir, port, cpu=0 if args.pin else None, media=media)
    pid, relay_pid, metrics = proc.pid, None, None
    if media is not None:
        relay_pid, pid = server.worker_pids(workdir / f"server-{port}.log")
        metrics = f"127.0.0.1:{media.metrics_port}"
    if args.pin:  # this process and the client workers it spawns: the other CPUs
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    base = f"127.0.0.1:{port}"
    rows = []
    try:
        gid, tokens = server.setup_accounts(base, max(sizes))
        print(
            f"{'N':>4}{'DTX':>5}{'server CPU':>12}{'per participant':>17}{'min frames':>12}"
            f"{'added p50':>11}{'added p99':>11}{'onsets heard':>14}"
            f"{'server: jitter p99':>20}{'send p99':>10}{'lag p99':>10}"
        )
        for n, mode in ((n, m) for n in sizes for m in modes):
            row = measure(base, pid, gid, tokens[:n], args.seconds, args.workers,
                          mode=mode, relay_pid=relay_pid, metrics=metrics)
            row["dtx"] = mode.dtx
            rows.append(row)
            print(
                f"{n:>4}{'on' if mode.dtx else 'off':>5}"
                f"{row['cpu'] * 100:>11.1f}%{row['cpu_per_participant'] * 100:>16.2f}%"
                f"{row['min_frames'] * 100:>11.1f}%"
                f"{(row['latency_p50'] - base_p50) * 1000:>9.1f}ms"
                f"{(row['latency_p99'] - base_p50) * 1000:>9.1f}ms"
                f"{row['onsets']:>8}/{row['onsets_expected']:<5}"
                f"{'<= %.0f ms' % (row['jitter_wait_p99'] * 1000):>20}"
                f"{'<= %.0f ms' % (row['send_wait_p99'] * 1000):>10}"
                f"{'<= %.0f ms' % (row['clock_lag_p99'] * 1000):>10}",
                flush=True,
            )
            if relay_pid is not None:
                print(f"     of which the whole worker relaying the signaling: "
                      f"{row['cpu_relay'] * 100:.1f}%")
            for err in row["errors"][:3]:
                print(f"     client error: {err}")
            time.sleep(2.0)  # let the server drop the previous clients
    finally:
        server.stop(proc)
        if media is not None:
            asyncio.run(server.forget(media))
    for mode in modes:
        ok = [
            r
            for r in rows
            if r["dtx"] == mode.dtx and r["cpu"] <= CPU_LIMIT
            and r["min_frames"] >= FRAMES_LIMIT and not r["errors"]
        ]
        best = max(ok, key=lambda r: r["n"], default=None)
        label = "with DTX" if mode.dtx else "without DTX"
        if best is None:
            print(f"{label}: no size met the limits")
        else:
            per = best["cpu_per_participant"]
            print(
                f"{label}: largest N at <= {CPU_LIMIT:.0%} of a core with every listener >= "
                f"{FRAMES_LIMIT:.0%} of frames: {best['n']} (server CPU per participant "
                f"{per * 100:.2f}% of a core -> ~{1 / per:.0f} participants per core)"
            )
    print(f"server log: {workdir}")


if __name__ == "__main__":
    main()
