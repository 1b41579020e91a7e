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
listener playing out like a browser (``tests/voice_network.py``). About 12 s
a condition. A Janus AudioBridge column (Debian ``janus``, ``bench/janus.py``)
is still to come: Janus offers no loopback candidates, so its relay needs the
machine's own address.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

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


async def real(only: str) -> int:
    from protocol import aiortc_compat
    from tests.voice_network import CLIP_S, FRAME_S, score_condition

    aiortc_compat.install()
    aiortc_compat.set_host_addresses(["127.0.0.1"])
    clip = speech()[: round(CLIP_S / FRAME_S) * 960]
    print(f"real sockets: {CLIP_S:g} s of speech a condition, one run each\n")
    print("| condition | disco PESQ | holes |")
    print("| --- | --- | --- |")
    started = time.monotonic()
    for condition in real_conditions():
        if only not in condition.name:
            continue
        score, gaps, _ = await score_condition(clip, condition.up, condition.down)
        print(f"| {condition.name} | {score:.2f} | {gaps} |", flush=True)
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="impairment seeds per cell")
    parser.add_argument("--only", default="", help="run conditions whose name contains this")
    parser.add_argument("--real", action="store_true",
                        help="aiortc peers and a MediaRoom over UdpRelay (real sockets)")
    args = parser.parse_args(argv)
    if args.real:
        return asyncio.run(real(args.only))

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
