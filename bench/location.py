"""Benchmark: location updates one process absorbs while keeping nearby audible sets current.

Not a test. Fills a ``groups.nearby.proximity.ProximityIndex`` with N people spread
uniformly over a city-sized square (default 100,000 over 40 x 40 km, about
Greater Berlin's density), each with a radius drawn from the nearby-room
range, then applies random moves (each person walks a random bearing by up
to ``--step-m`` metres) one at a time, timing each update. Every update
leaves the index's audible sets and gains exact for everyone (the property
test checks the same code against brute force). ``--emit`` also builds the
``listener -> {speaker: gain}`` mapping for every changed listener, the
hand-off to ``MediaRoom.set_audibility``.

The index's inner loops are compiled by numba on first use and cached on
disk (``__pycache__``): the first call's time is printed on its own (about
10 s when nothing is cached yet, under 1 s after) and is not in the fill or
update figures. Read the per-CPU-second figure when other processes share
the machine; the last line counts the index's housekeeping during the timed
updates (cell-list rebuilds, audible-set pool compactions).

    .venv/bin/python -m bench.location
    .venv/bin/python -m bench.location --batch 400   # one 20 ms tick at 20,000 updates/s
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import time

from groups.geo import METRES_PER_DEG_LAT
from groups.nearby.proximity import RADIUS_MAX_M, RADIUS_MIN_M, ProximityIndex

CENTRE_LAT, CENTRE_LON = 52.52, 13.405  # Berlin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--side-km", type=float, default=40.0, help="side of the square area")
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--step-m", type=float, default=25.0, help="max move per update")
    parser.add_argument(
        "--radii", default="mixed",
        help="'mixed' (half 500 m, the rest uniform 100..2000 m) or a fixed radius in metres",
    )
    parser.add_argument("--emit", action="store_true", help="also build changed listeners' maps")
    parser.add_argument(
        "--batch", type=int, default=1,
        help="updates applied together (ProximityIndex.update_many), e.g. one 20 ms tick's worth",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    half_lat = args.side_km * 500.0 / METRES_PER_DEG_LAT
    m_per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(CENTRE_LAT))
    half_lon = args.side_km * 500.0 / m_per_deg_lon

    def radius() -> float:
        if args.radii != "mixed":
            return float(args.radii)
        return 500.0 if rng.random() < 0.5 else rng.uniform(RADIUS_MIN_M, RADIUS_MAX_M)

    index = ProximityIndex()
    t0 = time.perf_counter()
    index.upsert("warm-up", CENTRE_LAT, CENTRE_LON)  # compiles the kernels, or loads them
    index.update_many([("warm-up", CENTRE_LAT, CENTRE_LON, None)])
    index.remove("warm-up")
    first_call_s = time.perf_counter() - t0
    pos: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    for i in range(args.people):
        lat = CENTRE_LAT + rng.uniform(-half_lat, half_lat)
        lon = CENTRE_LON + rng.uniform(-half_lon, half_lon)
        pos.append((lat, lon))
        index.upsert(str(i), lat, lon, radius())
    fill_s = time.perf_counter() - t0
    sizes = [len(index.neighbours(str(i))) for i in range(0, args.people, 97)]
    print(f"people: {args.people:,} in {args.side_km:g} x {args.side_km:g} km "
          f"({args.people / args.side_km**2:,.0f}/km²), radii: {args.radii}")
    print(f"first call (numba compile or cache load): {first_call_s:.1f} s; fill: {fill_s:.1f} s; "
          f"audible set size mean {statistics.mean(sizes):.1f}, max {max(sizes)}")

    moves = []
    for _ in range(args.updates):
        i = rng.randrange(args.people)
        lat, lon = pos[i]
        bearing = rng.uniform(0, 2 * math.pi)
        step = rng.uniform(0, args.step_m)
        lat = min(max(lat + step * math.cos(bearing) / METRES_PER_DEG_LAT,
                      CENTRE_LAT - half_lat), CENTRE_LAT + half_lat)
        lon = min(max(lon + step * math.sin(bearing) / m_per_deg_lon,
                      CENTRE_LON - half_lon), CENTRE_LON + half_lon)
        pos[i] = (lat, lon)
        moves.append((str(i), lat, lon))

    # warm the caches (rings, cell lists) the way a running server would be
    for pid, lat, lon in moves[: min(20_000, len(moves) // 10)]:
        index.move(pid, lat, lon)

    gc.collect()
    gc.disable()
    before = index.stats()
    timings = []  # per update: a batch's time is shared equally by its updates
    batch_ns = []
    changed_total = 0
    emit = args.emit
    batch = max(1, args.batch)
    clock = time.perf_counter_ns
    cpu_start = time.process_time()
    start = clock()
    for first in range(0, len(moves), batch):
        chunk = moves[first:first + batch]
        t = clock()
        if batch == 1:
            pid, lat, lon = chunk[0]
            changed = index.move(pid, lat, lon)
        else:
            changed = index.update_many([(pid, lat, lon, None) for pid, lat, lon in chunk])
        if emit:
            changed.update(pid for pid, _, _ in chunk)
            index.audibility(changed)
        elapsed = clock() - t
        timings.extend([elapsed // len(chunk)] * len(chunk))
        batch_ns.append(elapsed)
        changed_total += len(changed)
    wall_s = (clock() - start) / 1e9
    cpu_s = time.process_time() - cpu_start
    gc.enable()

    timings.sort()
    p50 = timings[len(timings) // 2] / 1000
    p99 = timings[int(len(timings) * 0.99)] / 1000
    print(f"updates: {len(moves):,} (step <= {args.step_m:g} m), batch {batch}"
          f"{', with --emit' if emit else ''}")
    print(f"throughput: {len(moves) / wall_s:,.0f} updates/s wall clock, "
          f"{len(moves) / cpu_s:,.0f} per CPU-second (one process, one core; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"per update: p50 {p50:.1f} us, p99 {p99:.1f} us, max {timings[-1] / 1000:.0f} us")
    if batch > 1:
        batch_ns.sort()
        batch_p99_ms = batch_ns[int(len(batch_ns) * 0.99)] / 1e6
        print(f"per batch of {batch}: p99 {batch_p99_ms:.2f} ms (the wait of one update)")
    print(f"listeners whose audible set changed: {changed_total / len(moves):.2f} per update")
    after = index.stats()
    rebuilds = ", ".join(f"res {res} {after[f'rebuilds_res{res}'] - before[f'rebuilds_res{res}']}"
                         for res in index.resolutions)
    print(f"housekeeping: cell-list rebuilds {rebuilds}; audible-set pool compactions "
          f"{after['compactions'] - before['compactions']}")


if __name__ == "__main__":
    main()
