"""Benchmark: the cost of one location fix in a nearby room, plan and messages included.

Not a test. Puts N guests (radius 500 m) at random in a 2 x 2 km square of one
``NearbyRoom`` with its media room started (no peers: the mix plan is what is
measured, not audio), then applies random 10 m moves and times each: the
index update, the mixer plan patch and the ``nearby`` lists sent to whoever
noticed. This is the path a phone's fix takes through ``signaling.nearby``.

    .venv/bin/python -m bench.nearby [--people 100,400] [--moves 2000] [--mesh]

``--mesh`` runs the same guests and moves side by side in a second room whose
fixes also go through ``signaling.nearby_mesh`` (what a node of a deployment
with Redis adds: the partition and the announcement queued; the bus is
in-process here, so publishing is not timed), alternating move by move, and
prints the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from groups.geo import METRES_PER_DEG_LAT
from signaling.nearby import NEARBY_ROOM, NearbyRoom
from signaling.rooms import RoomRegistry

CENTRE_LAT, CENTRE_LON = 48.85, 2.35  # Paris
M_PER_DEG_LON = METRES_PER_DEG_LAT * 0.6579  # cos(48.85°)


@dataclass
class Inbox:
    """A participant's connection side: counts what the room sent."""

    subject: str
    display_name: str
    received: int = 0

    def send(self, message: dict[str, Any]) -> None:
        self.received += 1


async def run(people: int, moves: int, side_m: float, seed: int, mesh: bool = False) -> None:
    from common.bus import LocalBus
    from signaling.nearby_mesh import NearbyMesh

    kinds = ["alone", "with the mesh"] if mesh else ["alone"]
    rooms = {kind: RoomRegistry() for kind in kinds}
    nearby = {kind: NearbyRoom(rooms[kind]) for kind in kinds}
    if mesh:
        NearbyMesh("bench", nearby["with the mesh"], LocalBus(), None,  # type: ignore[arg-type]
                   "bench:", time.time)
    rng = random.Random(seed)
    joined: dict[str, list[Any]] = {kind: [] for kind in kinds}
    where: list[tuple[float, float]] = []
    for i in range(people):
        where.append((CENTRE_LAT + rng.uniform(0, side_m) / METRES_PER_DEG_LAT,
                      CENTRE_LON + rng.uniform(0, side_m) / M_PER_DEG_LON))
        for kind in kinds:
            p = await rooms[kind].join(NEARBY_ROOM, Inbox(f"guest:{i}", f"G{i}"),
                                       radius_m=500.0)
            nearby[kind].move(p, *where[i])
            joined[kind].append(p)
    for kind in kinds:
        rooms[kind].on_leave.append(nearby[kind].leave)
        rooms[kind].media_started[NEARBY_ROOM] = nearby[kind].media_started
        await rooms[kind].media(NEARBY_ROOM)
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(moves):
        i = rng.randrange(people)
        lat, lon = where[i]
        lat += rng.uniform(-10, 10) / METRES_PER_DEG_LAT
        lon += rng.uniform(-10, 10) / M_PER_DEG_LON
        where[i] = (lat, lon)
        for kind in kinds:  # the same move in each room, one after the other
            t = time.perf_counter()
            nearby[kind].move(joined[kind][i], lat, lon)
            timings[kind].append(time.perf_counter() - t)
    first = nearby[kinds[0]]
    in_range = statistics.mean(len(first.hearers(p.participant_id)) for p in joined[kinds[0]])
    p50s = {}
    for kind in kinds:
        t = sorted(timings[kind])
        p50s[kind] = t[len(t) // 2]
        print(f"{people:>6} people ({in_range:.0f} in range on average), {kind}: per fix "
              f"p50 {t[len(t) // 2] * 1e6:.0f} us, p99 {t[int(len(t) * 0.99)] * 1e6:.0f} us")
    if mesh:
        print(f"{'':>6} ratio with / without the mesh (p50): "
              f"{p50s['with the mesh'] / p50s['alone']:.2f}")
    for kind in kinds:
        await rooms[kind].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", default="100,400", help="comma-separated room sizes")
    parser.add_argument("--moves", type=int, default=2000)
    parser.add_argument("--side-m", type=float, default=2000.0, help="side of the square area")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--mesh", action="store_true",
                        help="also time each fix with signaling.nearby_mesh, side by side")
    args = parser.parse_args()
    for n in (int(x) for x in args.people.split(",")):
        asyncio.run(run(n, args.moves, args.side_m, args.seed, args.mesh))


if __name__ == "__main__":
    main()
