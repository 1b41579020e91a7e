"""Benchmark: the cost of one location fix in a nearby room, plan and messages included.

Not a test. Puts N guests (radius 500 m) at random in a 2 x 2 km square of one
``NearbyRoom`` with its media room started (no peers: the mix plan is what is
measured, not audio), then applies random 10 m moves and times each: the
index update, the mixer plan patch and the ``nearby`` lists sent to whoever
noticed. This is the path a phone's fix takes through ``signaling.nearby``.

    .venv/bin/python -m bench.nearby [--people 100,400] [--moves 2000]
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


async def run(people: int, moves: int, side_m: float, seed: int) -> None:
    rooms = RoomRegistry()
    nearby = NearbyRoom(rooms)
    rooms.on_leave.append(nearby.leave)
    rooms.media_started[NEARBY_ROOM] = nearby.media_started
    rng = random.Random(seed)
    joined, where = [], {}
    for i in range(people):
        p = await rooms.join(NEARBY_ROOM, Inbox(f"guest:{i}", f"G{i}"), radius_m=500.0)
        where[p.participant_id] = (CENTRE_LAT + rng.uniform(0, side_m) / METRES_PER_DEG_LAT,
                                   CENTRE_LON + rng.uniform(0, side_m) / M_PER_DEG_LON)
        nearby.move(p, *where[p.participant_id])
        joined.append(p)
    await rooms.media(NEARBY_ROOM)
    timings = []
    for _ in range(moves):
        p = rng.choice(joined)
        lat, lon = where[p.participant_id]
        lat += rng.uniform(-10, 10) / METRES_PER_DEG_LAT
        lon += rng.uniform(-10, 10) / M_PER_DEG_LON
        where[p.participant_id] = (lat, lon)
        t = time.perf_counter()
        nearby.move(p, lat, lon)
        timings.append(time.perf_counter() - t)
    in_range = statistics.mean(len(nearby.hearers(p.participant_id)) for p in joined)
    timings.sort()
    print(f"{people:>6} people ({in_range:.0f} in range on average): per fix "
          f"p50 {timings[len(timings) // 2] * 1e6:.0f} us, "
          f"p99 {timings[int(len(timings) * 0.99)] * 1e6:.0f} us")
    await rooms.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", default="100,400", help="comma-separated room sizes")
    parser.add_argument("--moves", type=int, default=2000)
    parser.add_argument("--side-m", type=float, default=2000.0, help="side of the square area")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    for n in (int(x) for x in args.people.split(",")):
        asyncio.run(run(n, args.moves, args.side_m, args.seed))


if __name__ == "__main__":
    main()
