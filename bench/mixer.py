"""Cost of one 20 ms mixer tick, without the network.

    .venv/bin/python -m bench.mixer [--ticks 500] [--talkers 3]

For N listeners of which ``--talkers`` talk, measures per tick: levels and
speaking detection, the mix plan, mixing (int32 sum, clip) with dedupe, and
Opus encoding of each distinct mix, i.e. everything ``MediaRoom.tick`` does
except handing packets to aiortc. Two cases:

* group room: everyone hears everyone, so only talkers + 1 distinct mixes;
* proximity worst case: every listener has its own gains (no two recipes
  equal), which is what dedupe saves us from in group rooms.

Prints microseconds per tick and the share of a 20 ms period it uses.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

from sfu.codec import OpusEncoder
from sfu.levels import SpeakingDetector, levels_dbov
from sfu.mixer import FRAME_MS, FRAME_SAMPLES, MixPlan, assign_encoders, mix

SAMPLE_RATE_HZ = 48_000


def tone(freq_hz: float, tick: int) -> np.ndarray:
    t = (np.arange(FRAME_SAMPLES) + tick * FRAME_SAMPLES) / SAMPLE_RATE_HZ
    return (np.sin(2 * np.pi * freq_hz * t) * 8000).astype(np.int16)


def run(n: int, talkers: int, ticks: int, distinct: bool) -> tuple[float, float, int]:
    """Returns (median us/tick, p99 us/tick, encodes per tick)."""
    listeners = [f"p{i}" for i in range(n)]
    speaking = listeners[:talkers]
    plan = MixPlan()
    if distinct:
        # every listener hears the talkers at its own gains: no two mixes equal
        plan.audible = {
            lst: {s: 0.5 + (i % 97) / 100 + j / 1000 for j, s in enumerate(speaking)}
            for i, lst in enumerate(listeners)
        }
    detector = SpeakingDetector()
    encoders: dict[int, OpusEncoder] = {}
    previous: dict[str, int] = {}
    fresh = itertools.count(1)
    silent = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    timings = []
    encodes = 0
    for tick in range(ticks):
        frames = {p: tone(300 + 110 * i, tick) for i, p in enumerate(speaking)}
        frames.update({p: silent for p in listeners[talkers:]})  # listeners send silence
        t0 = time.perf_counter()
        ids = list(frames)
        levels = dict(
            zip(ids, levels_dbov(np.stack([frames[i] for i in ids])).tolist(), strict=True)
        )
        detector.update(tick * FRAME_MS / 1000, levels)
        active = [p for p in ids if detector.is_active(p)]
        recipes = plan.recipes(listeners, active)
        mixes, groups = mix(recipes, frames)
        enc_ids = assign_encoders(groups, previous, fresh)
        for recipe, pcm in mixes.items():
            enc = encoders.get(enc_ids[recipe])
            if enc is None:
                enc = encoders[enc_ids[recipe]] = OpusEncoder()
            enc.encode(pcm)
        previous = {lst: enc_ids[r] for r, ls in groups.items() for lst in ls}
        timings.append(time.perf_counter() - t0)
        encodes = len(mixes)
    timings = timings[ticks // 10 :]  # warm-up
    timings.sort()
    p99 = timings[int(len(timings) * 0.99) - 1]
    return statistics.median(timings) * 1e6, p99 * 1e6, encodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--talkers", type=int, default=3)
    parser.add_argument("--sizes", default="10,25,50,100,200")
    args = parser.parse_args()
    print(f"{'case':<22}{'N':>5}{'encodes':>9}{'median us':>11}{'p99 us':>9}{'% of 20ms':>11}")
    for distinct in (False, True):
        case = "proximity (distinct)" if distinct else "group (deduped)"
        for n in (int(x) for x in args.sizes.split(",")):
            med, p99, enc = run(n, args.talkers, args.ticks, distinct)
            share = med / (FRAME_MS * 1000) * 100
            print(f"{case:<22}{n:>5}{enc:>9}{med:>11.0f}{p99:>9.0f}{share:>10.1f}%")


if __name__ == "__main__":
    main()
