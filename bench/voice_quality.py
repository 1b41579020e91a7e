"""Voice quality under loss and jitter: wideband PESQ and holes, per condition.

    .venv/bin/python -m bench.voice_quality [--seeds 3] [--only NAME]

The offline voice path of ``tests/voice_pipeline.py`` (talker encode ->
uplink -> Disco receive -> re-encode -> downlink -> listener), on a virtual
clock, with speech made by espeak-ng, for each network condition and each
receive mode:

* ``disco``: the reorder buffer, FEC from the next packet, PLC, FEC on the
  encoders with the expected loss and bitrate ``sfu.fec_policy`` picks;
* ``disco+red``: the same plus RED (RFC 2198, two earlier frames per packet)
  on both hops, as for a browser that offered ``red/48000/2``;
* ``naive``: Disco before issue #14 (late packets dropped, silence for a
  missing frame, no FEC anywhere).

Each cell is the mean wideband PESQ (MOS-LQO, P.862.2) over ``--seeds``
impairment seeds, with the total count of holes (runs of 20 ms frames silent
where the talker spoke). The issue's targets: clean >= 3.2, 10 % loss both
ways >= 2.6, 0-60 ms jitter >= 2.8.

``--real`` runs over real sockets instead: a ``MediaRoom`` in this process,
aiortc peers, one ``tests.impair.UdpRelay`` on the talker's uplink and/or the
listener's downlink, 8 s of speech per condition, one run each (seeded), the
talker sending as Chrome does (RED with one earlier frame when the answer
accepts it: Disco's does, Janus's does not) and the listener playing out
like a browser (``tests/voice_network.py``). About 12 s
a cell. When Debian ``janus`` is installed (and not ``--no-janus``), two
Janus AudioBridge columns (default, and ``expected_loss=10``) go through the
same relays, talker and playout (``bench/janus.py`` starts Janus; Janus
offers no loopback candidates, so those clients and relays use the machine's
own address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from tests.impair import Impairment
from tests.speech import holes, pesq_wb, speech
from tests.voice_pipeline import MODES, Condition, run


def conditions(seed: int) -> list[Condition]:
    s = seed * 100
    both = lambda **kw: (Impairment(seed=s + 1, **kw), Impairment(seed=s + 2, **kw))  # noqa: E731
    return [
        Condition("clean"),
        Condition("5% loss both ways", *both(loss=0.05)),
        Condition("10% loss both ways", *both(loss=0.10)),
        Condition("20% loss both ways", *both(loss=0.20)),
        Condition("bursts ~7% (mean 2.5) both", *both(burst_p=0.03, burst_r=0.4)),
        Condition("0-60 ms jitter up", Impairment(jitter_ms=60.0, seed=s + 3)),
        Condition("0-60 ms jitter both ways", *both(jitter_ms=60.0)),
        Condition("0-100 ms jitter both ways", *both(jitter_ms=100.0)),
        Condition("10% loss + 0-60 ms jitter", *both(loss=0.10, jitter_ms=60.0)),
    ]


def real_conditions() -> list[Condition]:
    return [
        Condition("clean"),
        Condition("5% loss up", Impairment(loss=0.05, seed=1)),
        Condition("10% loss up", Impairment(loss=0.10, seed=1)),
        Condition("10% loss down", down=Impairment(loss=0.10, seed=2)),
        Condition("20% loss up", Impairment(loss=0.20, seed=1)),
        Condition("20% loss down", down=Impairment(loss=0.20, seed=2)),
        Condition("10% loss both ways", Impairment(loss=0.10, seed=1),
                  Impairment(loss=0.10, seed=2)),
        Condition("bursts ~7% (mean 2.5) up", Impairment(burst_p=0.03, burst_r=0.4, seed=1)),
        Condition("0-60 ms jitter up", Impairment(jitter_ms=60.0, seed=3)),
    ]


def _machine_address() -> str:
    """This machine's own IPv4 address (Janus offers no loopback candidates)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        return str(sock.getsockname()[0])


def _one_candidate(sdp: str, host: str, port: int) -> str:
    """``sdp`` with its UDP host candidates on ``host`` cut to one, moved to ``port``."""
    import re

    out, kept = [], False
    for line in sdp.splitlines(keepends=True):
        m = re.match(r"^(a=candidate:\S+ 1 udp \d+ )(\S+) (\d+)( typ host.*)$", line.rstrip(),
                     re.IGNORECASE)
        if line.startswith("a=candidate:"):
            if m is None or m.group(2) != host or kept:
                continue
            kept = True
            line = f"{m.group(1)}{host} {port}{m.group(4)}\r\n"
        out.append(line)
    return "".join(out)


def _candidate_port(sdp: str, host: str) -> int:
    import re

    for line in sdp.splitlines():
        m = re.match(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", line, re.IGNORECASE)
        if m is not None and m.group(1) == host:
            return int(m.group(2))
    raise RuntimeError(f"no host candidate on {host} in the answer")


async def janus_score(base: str, clip: Any, up: Impairment, down: Impairment,
                      expected_loss: int | None) -> tuple[float, int]:
    """Talker -> Janus AudioBridge -> listener, the same links and playout as Disco's."""
    from aiortc import RTCSessionDescription

    from bench.janus import BITRATE_BPS, COMPLEXITY, ROOM_ID, AudioBridge, sha256_only
    from protocol import aiortc_compat
    from tests.impair import CLEAN, UdpRelay
    from tests.voice_network import CLIP_S, SETTLE_S, TAIL_S, Client, SpeechTrack

    host = _machine_address()
    track = SpeechTrack(clip)
    talker, listener = Client("talker", track), Client("listener", SpeechTrack(clip[:0]))
    bridges: list[AudioBridge] = []
    try:
        for client, imp_up, imp_down in ((talker, up, CLEAN), (listener, CLEAN, down)):
            bridge = AudioBridge(base)
            bridges.append(bridge)
            await bridge.open()
            pc = client.pc
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            relay = await UdpRelay.start((host, 9), imp_up, imp_down, host=host)
            client.relay = relay
            join: dict[str, Any] = {"request": "join", "room": ROOM_ID, "display": client.name,
                                    "bitrate": BITRATE_BPS, "quality": COMPLEXITY,
                                    "muted": False}
            if expected_loss is not None:
                join["expected_loss"] = expected_loss
            joined = await bridge.request(join, jsep={
                "type": "offer",
                "sdp": sha256_only(_one_candidate(offer, host, relay.address[1]))})
            if not joined.get("jsep"):
                raise RuntimeError(f"janus did not answer: {joined}")
            answer = joined["jsep"]["sdp"]
            relay.target = (host, _candidate_port(answer, host))
            (receiver,) = [t.receiver for t in pc.getTransceivers()]
            await pc.setRemoteDescription(RTCSessionDescription(
                _one_candidate(answer, host, relay.address[1]), "answer"))
            aiortc_compat.take_rtp(receiver, client.arrivals.sink)
            await client.connected()
        await asyncio.sleep(SETTLE_S)
        track.say()
        await asyncio.sleep(CLIP_S + TAIL_S)
        assert track.said_at is not None
        heard = listener.arrivals.play(track.said_at, CLIP_S + TAIL_S)
        return pesq_wb(clip, heard), holes(clip, heard)
    finally:
        for c in (talker, listener):
            await c.close()
        for b in bridges:
            await b.close()


async def real(only: str, janus: bool) -> int:
    from protocol import aiortc_compat
    from tests.voice_network import CLIP_S, FRAME_S, score_condition

    aiortc_compat.install()
    clip = speech()[: round(CLIP_S / FRAME_S) * 960]
    print(f"real sockets: {CLIP_S:g} s of speech a condition, one run each\n")
    columns = ["disco"] + (["janus", "janus expected_loss=10"] if janus else [])
    print(f"| condition | {' | '.join(f'{c} PESQ | holes' for c in columns)} |")
    print("| --- |" + " --- | --- |" * len(columns))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        base = ""
        if janus:
            import tempfile
            from pathlib import Path

            from bench.janus import create_room, janus_server

            workdir = Path(tempfile.mkdtemp(prefix="disco-quality-janus-"))
            base, _ = stack.enter_context(janus_server(workdir))
            await asyncio.to_thread(create_room, base)
        for condition in real_conditions():
            if only not in condition.name:
                continue
            aiortc_compat.set_host_addresses(["127.0.0.1"])
            score, gaps, _ = await score_condition(clip, condition.up, condition.down)
            cells = [f"{score:.2f} | {gaps}"]
            if janus:
                aiortc_compat.set_host_addresses([_machine_address()])
                for expected in (None, 10):
                    try:
                        j, jg = await janus_score(base, clip, condition.up, condition.down,
                                                  expected)
                        cells.append(f"{j:.2f} | {jg}")
                    except Exception as exc:  # a failed Janus run is reported, not fatal
                        cells.append(f"error: {type(exc).__name__}: {exc} | -")
            print(f"| {condition.name} | {' | '.join(cells)} |", flush=True)
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="impairment seeds per cell")
    parser.add_argument("--only", default="", help="run conditions whose name contains this")
    parser.add_argument("--real", action="store_true",
                        help="aiortc peers and a MediaRoom over UdpRelay (real sockets)")
    parser.add_argument("--no-janus", action="store_true",
                        help="with --real: no Janus AudioBridge columns even if janus is here")
    args = parser.parse_args(argv)
    if args.real:
        from bench.janus import janus_binary

        return asyncio.run(real(args.only, janus=not args.no_janus and janus_binary() is not None))

    ref = speech()
    print(f"speech: {ref.shape[0] / 48_000:.1f} s (espeak-ng), {args.seeds} seed(s) a cell\n")
    names = [c.name for c in conditions(0) if args.only in c.name]
    print(f"| condition | {' | '.join(f'{m} PESQ | {m} holes' for m in MODES)} |")
    print("| --- |" + " --- | --- |" * len(MODES))
    started = time.monotonic()
    for name in names:
        cells = []
        for mode in MODES:
            scores, gaps = [], 0
            for seed in range(args.seeds):
                condition = next(c for c in conditions(seed) if c.name == name)
                out = run(ref, condition, mode)
                scores.append(pesq_wb(ref, out))
                gaps += holes(ref, out)
            spread = f" ±{statistics.pstdev(scores):.2f}" if len(scores) > 1 else ""
            cells.append(f"{statistics.mean(scores):.2f}{spread} | {gaps}")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
