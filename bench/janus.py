"""Janus AudioBridge beside Disco: the same load, alternated, the ratio printed.

    .venv/bin/python -m bench.janus [--sizes 20,40] [--seconds 8] [--rounds 2] [--pin]
                                    [--dtx off|on|both] [--no-levels] [--before DISCO]
                                    [--aiortc-send] [--loop-read]

Needs the Debian package ``janus`` (1.1.x). For each N it runs the load of
``bench.voice`` (3 talkers, 4 probes, the rest listening while sending, every
client sending pre-encoded Opus at 50 packets/s, or with ``--dtx`` silent
clients sending Opus DTX, one packet per 400 ms, as ``bench.voice`` says)
against ``disco serve`` and
against a Janus AudioBridge room (and, with ``--before TREE``, against the
Disco in another source tree, e.g. the commit before a change), alternating
``--rounds`` times so that a machine's drift hits both (Janus last in odd
rounds, first in even ones) (``--aiortc-send``
adds a Disco with ``DISCO_RTC_FAST_SEND=false``, aiortc's own sender loop,
to the same rounds; ``--loop-read`` one with ``DISCO_RTC_POLLED_RECEIVE=false``,
whose event loop wakes for every datagram), and prints each server's CPU (% of one core, from
/proc), the worst listener's frames and the ratio Disco / Janus.

Janus is configured to match Disco's mix: a room at 48 kHz, every
participant's Opus stream mono at 32 kbps and complexity 10 (AudioBridge's
``quality``), HTTP transport on loopback only, every other plugin and
transport disabled. Janus never offers loopback ICE candidates: its media runs
on the machine's own address, which stays on this machine. It accepts only
sha-256 DTLS fingerprints, so the clients drop aiortc's others from their
offers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import server as bench_server
from bench import voice

JANUS_PLUGINS_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM_ID = 1234
BITRATE_BPS = 32_000
COMPLEXITY = 10
SAMPLE_RATE_HZ = 48_000
START_TIMEOUT_S = 15.0
KEEP_PLUGINS = ("libjanus_audiobridge.so",)
KEEP_TRANSPORTS = ("libjanus_http.so",)


# --- the Janus process -----------------------------------------------------------------


def janus_binary() -> str | None:
    return shutil.which("janus")


def _library_dir() -> Path:
    for candidate in (JANUS_PLUGINS_DIR, Path("/usr/lib/janus"), Path("/usr/local/lib/janus")):
        if (candidate / "plugins").is_dir():
            return candidate
    raise RuntimeError("Janus plugins not found: install the Debian package janus")


def _disabled(folder: Path, keep: tuple[str, ...]) -> str:
    return ",".join(sorted(p.name for p in folder.glob("*.so") if p.name not in keep))


def write_config(folder: Path, http_port: int, rtp_ports: tuple[int, int]) -> Path:
    """A Janus configuration folder: HTTP on loopback, AudioBridge only. Returns janus.jcfg."""
    lib = _library_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{lib / 'plugins'}"
    transports_folder = "{lib / 'transports'}"
    events_folder = "{lib / 'events'}"
    loggers_folder = "{lib / 'loggers'}"
    debug_level = 3
    session_timeout = 600
}}
media: {{
    rtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"
}}
nat: {{
    nice_debug = false
}}
plugins: {{
    disable = "{_disabled(lib / 'plugins', KEEP_PLUGINS)}"
}}
transports: {{
    disable = "{_disabled(lib / 'transports', KEEP_TRANSPORTS)}"
}}
loggers: {{
    disable = "{_disabled(lib / 'loggers', ())}"
}}
events: {{
    broadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {http_port}
    interface = "lo"
    https = false
}}
admin: {{
    admin_http = false
}}
""")
    (folder / "janus.plugin.audiobridge.jcfg").write_text("general: {\n}\n")
    return folder / "janus.jcfg"


@contextlib.contextmanager
def janus_server(workdir: Path, cpu: int | None = None) -> Iterator[tuple[str, int]]:
    """Run Janus until the block ends; yields (its HTTP API base URL, its pid)."""
    binary = janus_binary()
    if binary is None:
        raise RuntimeError("janus is not installed (Debian package janus)")
    port = bench_server.free_port()
    config = write_config(workdir / "janus", port, (42_000, 42_999))
    log = (workdir / "janus.log").open("wb")
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen([binary, "-C", str(config), "-F", str(config.parent)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin)
    base = f"http://127.0.0.1:{port}/janus"
    try:
        _wait_for_api(base, proc)
        yield base, proc.pid
    finally:
        bench_server.stop(proc)


def _wait_for_api(base: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"janus exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(base, json={"janus": "info", "transaction": "i"}, timeout=1).is_success:
                return
        time.sleep(0.1)
    raise TimeoutError("janus did not answer on its HTTP API")


# --- the Janus HTTP API (one session, one AudioBridge handle) --------------------------------


class AudioBridge:
    """One participant's Janus session with an AudioBridge handle, over the HTTP API."""

    def __init__(self, base: str) -> None:
        import httpx

        self._http = httpx.AsyncClient(timeout=30)
        self._base = base
        self._session = ""
        self._handle = ""
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(6)}
        reply: dict[str, Any] = (await self._http.post(url, json=body)).json()
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply['error']}")
        return reply

    async def open(self) -> None:
        self._session = str((await self._post(self._base, {"janus": "create"}))["data"]["id"])
        attached = await self._post(f"{self._base}/{self._session}",
                                    {"janus": "attach", "plugin": "janus.plugin.audiobridge"})
        self._handle = str(attached["data"]["id"])
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                r = await self._http.get(f"{self._base}/{self._session}?maxev=5", timeout=40)
                events = r.json()
                for event in events if isinstance(events, list) else [events]:
                    await self._events.put(event)

    async def request(self, body: dict[str, Any], jsep: dict[str, str] | None = None
                      ) -> dict[str, Any]:
        """A plugin request; synchronous answers come back at once, the rest as an event."""
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self._post(f"{self._base}/{self._session}/{self._handle}", message)
        if reply.get("janus") == "success":
            data: dict[str, Any] = reply["plugindata"]["data"]
            return data
        while True:  # "ack": the answer is an event
            event = await asyncio.wait_for(self._events.get(), 30)
            if event.get("janus") == "event" and event.get("sender") == int(self._handle):
                return {**event["plugindata"]["data"], "jsep": event.get("jsep")}

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"{self._base}/{self._session}", {"janus": "destroy"})
        await self._http.aclose()


def create_room(base: str) -> None:
    async def run() -> None:
        bridge = AudioBridge(base)
        await bridge.open()
        try:
            await bridge.request({"request": "create", "room": ROOM_ID,
                                  "sampling_rate": SAMPLE_RATE_HZ, "permanent": False,
                                  "audiolevel_event": False})
        finally:
            await bridge.close()

    asyncio.run(run())


def sha256_only(sdp: str) -> str:
    """Janus takes sha-256 DTLS fingerprints only; aiortc lists sha-384/512 too."""
    return "".join(line for line in sdp.splitlines(keepends=True)
                   if not line.startswith(("a=fingerprint:sha-384", "a=fingerprint:sha-512")))


# --- a client (runs in the worker processes of bench.voice) -----------------------------------


async def run_janus_client(
    base: str, _token: str, _room: str, role: str, index: int, t0: float, ready: Any,
    window: Any, mode: voice.ClientMode,
) -> voice.ClientResult:
    """``bench.voice``'s client, joined to the AudioBridge room instead of Disco."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    result = voice.ClientResult(role=role)
    arrivals: list[float] = []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    bridge = AudioBridge(base)
    try:
        await bridge.open()
        voice.add_track(pc, role, index, t0, result, mode)
        detector = voice._OnsetDetector(result.onsets_heard) if role == "probe" else None
        voice._install_arrival_buffers(pc, arrivals, detector)
        await pc.setLocalDescription(await pc.createOffer())
        joined = await bridge.request(
            {"request": "join", "room": ROOM_ID, "display": f"{role}{index}",
             "bitrate": BITRATE_BPS, "quality": COMPLEXITY, "muted": False},
            jsep={"type": "offer", "sdp": sha256_only(pc.localDescription.sdp)},
        )
        if not joined.get("jsep"):
            raise RuntimeError(f"janus did not answer: {joined}")
        await pc.setRemoteDescription(RTCSessionDescription(joined["jsep"]["sdp"], "answer"))
        await voice.wait_until_heard(arrivals, ready, window, result)
    except Exception as exc:  # reported, not raised: one bad client must not hide the rest
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await pc.close()
        await bridge.close()
    return result


def _janus_worker(base: str, jobs: list[tuple[str, str, int]], room: str, t0: float,
                  ready: Any, window: Any, out: Any, nice: int = 0,
                  mode: voice.ClientMode = voice.ClientMode()) -> None:
    if nice:
        os.nice(nice)

    async def main() -> list[voice.ClientResult]:
        return list(await asyncio.gather(*(
            run_janus_client(base, token, room, role, index, t0, ready, window, mode)
            for token, role, index in jobs
        )))

    out.put([r.__dict__ for r in asyncio.run(main())])


# --- the side-by-side run ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,40")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="A/B alternations per size")
    parser.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2)))
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0, clients on the other CPUs")
    parser.add_argument("--before", metavar="TREE", type=Path,
                        help="also run the Disco in this source tree (e.g. `git archive "
                        "<commit>` unpacked) in the same rounds: before/after in one run")
    parser.add_argument("--aiortc-send", action="store_true",
                        help="also a Disco with DISCO_RTC_FAST_SEND=false (aiortc's sender "
                             "loop), measured in the same rounds")
    parser.add_argument("--loop-read", action="store_true",
                        help="also a Disco with DISCO_RTC_POLLED_RECEIVE=false (the event "
                             "loop reads every peer's socket as packets come), same rounds")
    voice.add_mode_arguments(parser)
    args = parser.parse_args()
    modes = voice.client_modes(args)
    if janus_binary() is None:
        raise SystemExit("janus is not installed: apt-get install janus")
    sizes = [int(x) for x in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="disco-janus-bench-"))
    cpu = 0 if args.pin else None
    servers: list[tuple[str, subprocess.Popen[bytes], str]] = []  # label, process, base
    wanted: list[tuple[str, Path | None, dict[str, str]]] = [("Disco", None, {})]
    if args.before is not None:
        wanted.append(("before", args.before, {}))
    if args.aiortc_send:
        wanted.append(("aiortc-send", None, {"DISCO_RTC_FAST_SEND": "false"}))
    if args.loop_read:
        wanted.append(("loop-read", None, {"DISCO_RTC_POLLED_RECEIVE": "false"}))
    for label, binary, env in wanted:
        port = bench_server.free_port()
        sub = workdir / label
        sub.mkdir()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            proc = bench_server.start_server(sub, port, cpu=cpu, source=binary)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        servers.append((label, proc, f"127.0.0.1:{port}"))
    if args.pin:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    mp.set_start_method("spawn", force=True)
    extras = [label for label, _, _ in servers[1:]]
    print(f"{'N':>4}{'DTX':>5}{'round':>7}{'Disco CPU':>11}{'Janus CPU':>11}{'Disco/Janus':>13}"
          + "".join(f"{label + ' CPU':>16}{label + '/Janus':>18}" for label in extras)
          + f"{'frames D/J':>16}{'RSS D/J MB':>14}")
    try:
        accounts = {label: bench_server.setup_accounts(base, max(sizes))
                    for label, _, base in servers}
        with janus_server(workdir, cpu=cpu) as (janus_base, janus_pid):
            create_room(janus_base)
            for n, mode in ((n, m) for n in sizes for m in modes):
                ratios: dict[str, list[float]] = {label: [] for label, _, _ in servers}
                dtx = "on" if mode.dtx else "off"
                for k in range(args.rounds):
                    got: dict[str, dict[str, Any]] = {}
                    # Janus last in odd rounds, first in even ones: a drift within a
                    # round (the VM's load, its clock) falls on each side in turn.
                    order = [*servers, None] if k % 2 == 0 else [None, *servers]
                    for server in order:
                        if server is None:
                            got["Janus"] = voice.measure(
                                janus_base, janus_pid, ROOM_ID, accounts["Disco"][1][:n],
                                args.seconds, args.workers, worker=_janus_worker, mode=mode)
                        else:
                            label, proc, base = server
                            gid, tokens = accounts[label]
                            got[label] = voice.measure(base, proc.pid, gid, tokens[:n],
                                                       args.seconds, args.workers, mode=mode)
                        time.sleep(2.0)
                    j = got.pop("Janus")
                    for label, _, _ in servers:
                        ratios[label].append(got[label]["cpu"] / j["cpu"] if j["cpu"]
                                             else float("nan"))
                    d = got["Disco"]
                    line = (f"{n:>4}{dtx:>5}{k + 1:>7}{d['cpu'] * 100:>10.1f}%"
                            f"{j['cpu'] * 100:>10.1f}%{ratios['Disco'][-1]:>13.2f}")
                    for label in extras:
                        line += (f"{got[label]['cpu'] * 100:>15.1f}%"
                                 f"{ratios[label][-1]:>18.2f}")
                    line += (f"{d['min_frames'] * 100:>8.1f}/{j['min_frames'] * 100:<6.1f}"
                             f"{_rss_mb(servers[0][1].pid):>7.0f}/{_rss_mb(janus_pid):<6.0f}")
                    print(line, flush=True)
                    errors = [e for r in (*got.values(), j) for e in r["errors"]]
                    for err in errors[:3]:
                        print(f"     client error: {err}")
                for label, values in ratios.items():
                    values.sort()
                    print(f"{n:>4}{dtx:>5} median {label}/Janus CPU ratio: "
                          f"{values[len(values) // 2]:.2f} (rounds {values[0]:.2f}-"
                          f"{values[-1]:.2f})")
    finally:
        for _, proc, _ in servers:
            bench_server.stop(proc)
    print(f"logs: {workdir}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
