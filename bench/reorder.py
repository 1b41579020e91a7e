"""The reorder buffer's CPU per packet (push, then the tick's pop), this tree beside another.

    .venv/bin/python -m bench.reorder [--before TREE] [--packets 50000] [--rounds 3]

One ``protocol.reorder.ReorderBuffer`` (started at one frame, as the server
starts it) gets a clean 50 packets/s stream with 0-2 ms of arrival jitter on
a virtual clock: per packet one ``push`` and one ``pop``, each timed with
``perf_counter``. With ``--before TREE`` (e.g. ``git archive <commit>``
unpacked) that tree's ``protocol/reorder.py`` is loaded beside this one and
each packet goes to both buffers in turn, in the same process, so the
machine's load hits both; the ratio is this tree's push+pop over the other's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 80
"""About a 32 kbps Opus frame."""
FRAME_S = 0.02


def load(tree: Path, name: str) -> ModuleType:
    """``protocol/reorder.py`` of ``tree`` as a module of its own (pure: it imports no
    other module of the project)."""
    path = tree / "protocol" / "reorder.py"
    if not path.is_file():
        raise SystemExit(f"no protocol/reorder.py under {tree}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def per_packet_us(modules: list[ModuleType], packets: int) -> list[tuple[float, float]]:
    """(push, pop) in microseconds per packet for each module's buffer, the buffers fed
    the same packet in turn (so a burst of load elsewhere hits them alike)."""
    bufs = [m.ReorderBuffer(initial_depth_frames=1) for m in modules]
    clock = time.perf_counter
    push_s = [0.0] * len(bufs)
    pop_s = [0.0] * len(bufs)
    for i in range(packets):
        now = i * FRAME_S
        seq, ts, at = i & 0xFFFF, (i * 960) & 0xFFFF_FFFF, now + 0.001 * (i % 3)
        for k, buf in enumerate(bufs):
            t0 = clock()
            buf.push(seq, ts, PAYLOAD, at)
            t1 = clock()
            buf.pop(now + 0.005)
            t2 = clock()
            push_s[k] += t1 - t0
            pop_s[k] += t2 - t1
    return [(a / packets * 1e6, b / packets * 1e6) for a, b in zip(push_s, pop_s, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="TREE", type=Path)
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = [("this", load(HERE, "_reorder_this"))]
    if args.before is not None:
        trees.append(("before", load(args.before, "_reorder_before")))
    print(f"{'round':>6}" + "".join(f"{label + ' push':>14}{label + ' pop':>13}"
                                    for label, _ in trees) + ("  this/before" if
                                                              len(trees) > 1 else ""))
    ratios = []
    for k in range(args.rounds):
        got = per_packet_us([module for _, module in trees], args.packets)
        line = f"{k + 1:>6}" + "".join(f"{push:>12.2f}us{pop:>11.2f}us" for push, pop in got)
        if len(got) > 1:
            ratios.append(sum(got[0]) / sum(got[1]))
            line += f"{ratios[-1]:>13.2f}"
        print(line, flush=True)
    if ratios:
        ratios.sort()
        print(f"median this/before CPU per packet (push + pop): {ratios[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
