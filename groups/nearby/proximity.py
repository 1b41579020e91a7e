"""Who hears whom in a nearby room: a spatial index with incremental audible sets. Pure.

The rule: two people hear each other when each is inside the other's chosen
radius (``RADIUS_MIN_M``..``RADIUS_MAX_M``), i.e. when their distance is at
most the smaller radius, the pair's *range*. The gain falls with distance
along a ``GainCurve`` (full volume in the nearest quarter of the range, then
fading to a floor at the edge); because the range is shared, the gain is the
same in both directions. Gains are quantized (``GAIN_STEPS``) so that a
person shuffling a metre does not rewrite everyone's mix plan.

The index is H3 (Uber's hexagonal grid, the well-kept ``h3`` package, v4
API), not a scan: every person is filed under their cell at a few
resolutions; a query for radius ``r`` picks the finest resolution whose
neighbour ring ``grid_disk(cell, k)`` stays small, with ``k`` derived from the
local cell size so that the ring provably covers the disc of radius ``r``
around any point of the cell (see ``_ring_k``). Candidates are tested
exactly by the dot product of unit vectors (cos of the central angle),
which is the haversine test without trig per pair (``groups.geo``).

Everything per candidate or per pair runs compiled (``groups.nearby.kernel``,
numba), one call per update: place the mover; walk the ring's cells,
skipping those whose centre is too far from the actual point; find each by
binary search in sorted cell lists and test everyone there, plus a short
overflow of people who changed cell since the lists were built; then diff
the found set against the stored one and patch both sides of each changed
pair. Why: the numpy version this replaces spent ~85 us per update on the
overhead of ~20 small array operations around ~1 us of arithmetic, and a
Python set per person (~4 KB with its ints: ~400 MB for 100,000 people) made
every set comparison a run of cache misses. The shape follows from memory
traffic:

- cell lists in CSR form hold a copy of each person's point, so a query
  reads memory in sequence; a person crossing a border marks the old copy
  stale and joins the overflow, so a move never shifts a list; when the
  overflow fills (``OVERFLOW_MAX``) one linear merge rebuilds the lists.
- audible sets are blocks of slot numbers in one int32 pool, compared by
  stamping rather than hashing (~1.5 us for a set of 70).
- two resolutions, not one: in a crowd (5,000 people/km², 300 m radius)
  res 9 for small radii halves the candidates; in a city it costs ~10 %.

Verlet lists (neighbour lists with a skin distance) were the alternative:
with radii up to 2 km each list would hold several hundred people and still
need this cell index to refresh it, for no gain over testing ~300
candidates. What stays in Python is what needs Python objects: the H3
calls (one per resolution, ~0.35 us each), the ring caches and the ids.

Audible *sets* are kept current on every update; *gains* are computed from
the current positions when asked (``audible``), so they are never stale and
a move costs nothing per unchanged neighbour.

An update (move, radius change, join, leave) recomputes the mover's set,
patches the other side of each pair that appeared or vanished, and returns
exactly the listeners whose set changed. The mover's neighbours hear the
mover at a new gain after any move: refresh ``audibility(changed |
neighbours(mover))`` for ``MediaRoom.update_audibility`` at whatever rate
the mixer wants.

The kernels compile on first use (~9 s on a fresh install, then ~0.3 s to
load numba's on-disk cache), and numba itself weighs ~60 MB, ~150 MB once the
kernels are loaded: building an index imports none of it (the array layout is
``groups.nearby.layout``). A server fills numba's cache at start in a helper
process (``python -m groups.nearby.proximity``) and loads the kernels in a
thread when somebody first joins its nearby room (``ensure_warm``), so no
fix ever waits for the compiler on the event loop and a voice node without
nearby guests never carries numba.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from h3.api import basic_int as h3

from common.errors import BadRequest, NotFound
from groups.geo import EARTH_RADIUS_M, haversine_m, unit_vector
from groups.location.fixes import validate_lat_lon
from groups.location.privacy import STRANGER_STEP_M, round_distance_m
from groups.nearby import layout
from protocol.limits import RADIUS_MAX_M, RADIUS_MIN_M

log = logging.getLogger(__name__)

RADIUS_DEFAULT_M = 500.0
GAIN_STEPS = 100  # gains are multiples of 1/GAIN_STEPS
RESOLUTIONS = (8, 9)  # H3 resolutions people are filed under (edges ~530 and ~200 m)
MAX_RING_K = 3  # a query ring holds at most 3k(k+1)+1 = 37 cells
RADIUS_BUCKET_M = 50.0  # ring sizes are planned per 50 m of radius
RING_SAFETY = 1.25  # H3's rings reach up to 13 % less far than a flat lattice's (see _ring_k)
CELL_SIZE_TOLERANCE = 0.05  # a nearby cell's circumradius is within 5 % of the query cell's
CACHE_MAX_ENTRIES = 200_000  # per cache; cleared wholesale when full (cheap to rebuild)
INITIAL_CAPACITY = 1024  # slots; doubled when full
# Overflow entries per resolution before its cell lists are rebuilt. Every query
# scans its overflow (~1 ns an entry); a rebuild is one merge, ~1.3 ms at res 8
# and ~3 ms at res 9 for 100,000 people, and 1.5 % (res 8) and 4.6 % (res 9) of
# 25 m moves cross a border. 512 keeps each side under ~0.5 us per update
# (measured: 256 -> 61k, 512 -> 67k, 1024 -> 65k moves per CPU-second).
OVERFLOW_MAX = 512
RING_POOL_INITIAL_CELLS = 4096
RING_POOL_MAX_CELLS = 2_000_000  # 64 MB of cached rings (8 B cell + 24 B centre each)
ADJ_POOL_MIN_ENTRIES = 16_384  # audible-set pool: at least this many slot numbers (4 B each)

T = TypeVar("T", bound=np.generic)
Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Query = tuple[int, int, float]  # (ring start, ring length, centre cos): ProximityIndex._new_query
KernelArrays = tuple[
    FloatArray, Int64Array, Int64Array, Int64Array, Int64Array, FloatArray, Int64Array,
    FloatArray, Int64Array, Int64Array, FloatArray, Int32Array, Int64Array, Int64Array,
    Int64Array,
]


def _checked_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    """``validate_lat_lon``, then the point as floats (ints are valid too)."""
    validate_lat_lon(lat, lon)
    return float(lat), float(lon)


def validate_radius(radius_m: object) -> float:
    """A nearby-room radius in metres, or ``BadRequest``."""
    if isinstance(radius_m, bool) or not isinstance(radius_m, int | float):
        raise BadRequest("radius_m must be a number", detail={"field": "radius_m"})
    radius = float(radius_m)
    if not math.isfinite(radius) or not RADIUS_MIN_M <= radius <= RADIUS_MAX_M:
        raise BadRequest(
            f"radius_m must be between {RADIUS_MIN_M:g} and {RADIUS_MAX_M:g} m",
            detail={"field": "radius_m", "value": radius_m if math.isfinite(radius) else None},
        )
    return radius


@dataclass(frozen=True, slots=True)
class GainCurve:
    """Gain over the pair's range: 1 up to ``full_fraction``, then down to ``floor`` at the edge.

    ``exponent`` shapes the fade: 1 is linear, 2 falls fast then flattens,
    0.5 stays loud longer. Beyond the range the gain is 0 (not audible).
    """

    full_fraction: float = 0.25
    floor: float = 0.15
    exponent: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.full_fraction < 1.0:
            raise ValueError("full_fraction must be in [0, 1)")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError("floor must be in (0, 1]")
        if not self.exponent > 0.0:
            raise ValueError("exponent must be > 0")

    def gain(self, distance_m: float, range_m: float) -> float:
        """Unquantized gain for one pair (0 when out of range)."""
        if distance_m > range_m:
            return 0.0
        full_m = self.full_fraction * range_m
        if distance_m <= full_m:
            return 1.0
        t = (distance_m - full_m) / (range_m - full_m)
        return self.floor + (1.0 - self.floor) * (1.0 - t) ** self.exponent

    def gains(self, distance_m: FloatArray, range_m: FloatArray) -> FloatArray:
        """Vectorized ``gain`` for in-range pairs."""
        full_m = self.full_fraction * range_m
        t = np.clip((distance_m - full_m) / (range_m - full_m), 0.0, 1.0)
        return self.floor + (1.0 - self.floor) * (1.0 - t) ** self.exponent

    def quantized(self, distance_m: float, range_m: float) -> int:
        return round(self.gain(distance_m, range_m) * GAIN_STEPS)


def stranger_gain(distance_m: float, range_m: float, curve: GainCurve) -> float:
    """The gain strangers hear each other at: the curve at the distance they are *told*.

    The distance is rounded as ``groups.location.privacy.round_distance_m``
    rounds it for the text, and capped at the range (a pair just inside a
    range that is not a multiple of the step rounds past it), so two people
    whose rounded distance is the same hear each other at the same gain:
    neither the number sent nor the audio level says more than the text.
    A multiple of 1/GAIN_STEPS, like every gain.
    """
    stepped = min(float(round_distance_m(distance_m)), range_m)
    return curve.quantized(stepped, range_m) / GAIN_STEPS


def _cos_limit(radius_m: float) -> float:
    """cos of the central angle of ``radius_m``: within range iff dot(p, q) >= this."""
    return math.cos(radius_m / EARTH_RADIUS_M)


def _circumradius_m(cell: int) -> float:
    """Largest centre-to-vertex distance of an H3 cell (its edges are geodesics)."""
    lat, lon = h3.cell_to_latlng(cell)
    return max(haversine_m(lat, lon, vlat, vlon) for vlat, vlon in h3.cell_to_boundary(cell))


def _ring_k(radius_m: float, circumradius_m: float) -> int:
    """Smallest ring ``k`` so that ``grid_disk(cell, k)`` holds every point within ``radius_m``.

    A point p in the cell is within e (the circumradius) of its centre; a
    point q within ``radius_m`` of p lies in a cell whose centre is within
    ``radius_m + 2e`` of the query cell's centre (neighbours are the same size
    to well under 1 %: H3 sizes change over thousands of kilometres). In a
    flat hexagonal lattice the cells at grid distance m have centres at least
    ``1.5 m e`` away (the apothem of the m-th ring), which would give
    ``k = floor((radius_m + 2e) / 1.5e)``. H3 is not flat: across icosahedron
    face edges and next to the 12 pentagons a ring reaches less far. Sampling
    120,000 random pairs over the globe, the grid distance exceeded the flat
    estimate by at most 7 %, and by 13 % next to pentagons; ``RING_SAFETY``
    covers that, and the property test checks the index against brute force
    at the equator, across the antimeridian and in the Arctic.
    """
    e = circumradius_m
    return math.floor(RING_SAFETY * (radius_m + 2.0 * e) / (1.5 * e))


class ProximityIndex:
    """Nearby-room participants by id: positions, radii, and the audible pairs with gains."""

    def __init__(
        self, curve: GainCurve | None = None, resolutions: tuple[int, ...] = RESOLUTIONS,
        max_ring_k: int = MAX_RING_K, overflow_max: int = OVERFLOW_MAX,
    ) -> None:
        self.curve = curve or GainCurve()
        self.resolutions = tuple(sorted(resolutions))
        self.max_ring_k = max_ring_k
        levels, capacity = len(self.resolutions), INITIAL_CAPACITY
        # the kernel's arrays (layout: groups.nearby.kernel, numba: not imported until used)
        self._points: FloatArray = np.zeros((capacity, 4))
        self._points[:, layout.COS] = layout.FREE_COS
        self._where: Int64Array = np.zeros((levels, capacity, 4), dtype=np.int64)
        self._order: Int64Array = np.zeros((levels, capacity), dtype=np.int64)
        self._keys: Int64Array = np.zeros((levels, capacity), dtype=np.int64)
        self._starts: Int64Array = np.zeros((levels, capacity + 1), dtype=np.int64)
        self._listed: FloatArray = np.zeros((levels, capacity, 4))
        self._overflow: Int64Array = np.zeros((levels, overflow_max), dtype=np.int64)
        self._over_points: FloatArray = np.zeros((levels, overflow_max, 4))
        self._counts: Int64Array = np.zeros((levels, 3), dtype=np.int64)
        self._ring_cells: Int64Array = np.zeros(RING_POOL_INITIAL_CELLS, dtype=np.int64)
        self._ring_centres: FloatArray = np.zeros((RING_POOL_INITIAL_CELLS, 3))
        self._adj: Int32Array = np.zeros(ADJ_POOL_MIN_ENTRIES, dtype=np.int32)
        self._adj_meta: Int64Array = np.zeros((capacity, 3), dtype=np.int64)
        self._tallies: Int64Array = np.zeros(2, dtype=np.int64)
        self._scratch: Int64Array = np.zeros((3, capacity), dtype=np.int64)
        self._out = self._scratch[layout.OUT]  # who changed, after a kernel call
        self._arrays = self._kernel_arrays()
        self._ring_used = 0
        self._compactions = 0
        # per slot, in Python
        self._radius: FloatArray = np.zeros(capacity)
        self._ids: list[str | None] = [None] * capacity
        self._slot: dict[str, int] = {}
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._plan_of: list[tuple[int, int]] = [(0, 0)] * capacity  # (resolution index, bucket)
        # caches
        self._plan_cache: dict[int, int] = {}  # radius bucket -> resolution index
        self._circumradius: dict[int, float] = {}
        self._rings: dict[tuple[int, int], tuple[int, int]] = {}  # (cell, k) -> ring pool span
        self._queries: dict[tuple[int, int], Query] = {}  # (cell, radius bucket) -> query
        self.latlon: dict[str, tuple[float, float]] = {}

    # --- public API ------------------------------------------------------

    def __contains__(self, pid: object) -> bool:
        return pid in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def radius_m(self, pid: str) -> float:
        return float(self._radius[self._slot_of(pid)])

    def upsert(self, pid: str, lat: float, lon: float, radius_m: float | None = None) -> set[str]:
        """Add or move a person (and optionally change their radius); returns changed listeners."""
        flat, flon = _checked_lat_lon(lat, lon)
        radius = validate_radius(radius_m) if radius_m is not None else None
        return self._move(self._enter(pid, lat, lon, radius), flat, flon)

    def update_many(
        self, updates: Iterable[tuple[str, float, float, float | None]]
    ) -> set[str]:
        """Apply a batch of (pid, lat, lon, radius or None) at once; returns changed listeners.

        Why: two compiled calls serve the whole batch (say, every fix that
        arrived during one 20 ms mixer tick) instead of one per update. The
        result is exactly that of applying the updates one by one (the last
        position and radius per person win): every position is placed
        first, then every mover's set is computed against the same, final
        positions, so a pair of movers is judged consistently from both
        sides. Everything is validated before anything changes.
        """
        latest: dict[str, tuple[float, float, float | None]] = {}
        for pid, lat, lon, radius_m in updates:
            _checked_lat_lon(lat, lon)
            radius = validate_radius(radius_m) if radius_m is not None else None
            if radius is None and pid in latest:
                radius = latest[pid][2]  # an earlier radius change in the batch still counts
            latest[pid] = (lat, lon, radius)
        if not latest:
            return set()
        self._trim_caches()  # not later: the queries below point into the ring pool
        slots, lats, lons, cells, queries = [], [], [], [], []
        resolutions, plan_of, known = self.resolutions, self._plan_of, self._queries
        for pid, (lat, lon, radius) in latest.items():
            slot = self._enter(pid, lat, lon, radius)
            flat, flon = float(lat), float(lon)
            mine = [h3.latlng_to_cell(flat, flon, res) for res in resolutions]
            level, bucket = plan_of[slot]
            key = (mine[level], bucket)
            start, length, centre_cos = known.get(key) or self._new_query(*key)
            slots.append(slot)
            lats.append(flat)
            lons.append(flon)
            cells.append(mine)
            queries.append((level, start, length, centre_cos))
        from groups.nearby import kernel  # numba: on first use (see warm_up)
        slot_array = np.array(slots, dtype=np.int64)
        kernel.place_many(slot_array, np.array(lats), np.array(lons),
                          np.array(cells, dtype=np.int64), *self._arrays)
        levels, starts, lengths, centre_coss = (
            np.array(column) for column in zip(*queries, strict=True))
        changed: set[str] = set()
        done = attempt = 0
        ids = self._ids
        while True:
            got, now_done = kernel.settle_many(
                done, slot_array, levels, starts, lengths, centre_coss, *self._arrays)
            changed.update([ids[s] for s in got.tolist()])  # type: ignore[misc]
            if now_done == len(slots):
                return changed
            attempt = attempt + 1 if now_done == done else 0  # a bigger pool if no progress
            done = now_done
            self._make_room(attempt)

    def move(self, pid: str, lat: float, lon: float) -> set[str]:
        """A known person's new position; returns changed listeners."""
        slot = self._slot_of(pid)
        flat, flon = _checked_lat_lon(lat, lon)
        self.latlon[pid] = (lat, lon)
        return self._move(slot, flat, flon)

    def set_radius(self, pid: str, radius_m: float) -> set[str]:
        """A known person's new radius; returns changed listeners."""
        slot = self._slot_of(pid)
        self._set_radius(slot, validate_radius(radius_m))
        lat, lon = self.latlon[pid]
        return self._move(slot, float(lat), float(lon))

    def remove(self, pid: str) -> set[str]:
        """Take a person out; returns the listeners who lost them (and not the person)."""
        slot = self._slot.pop(pid, None)
        if slot is None:
            return set()
        from groups.nearby import kernel  # numba: on first use (see warm_up)
        n = kernel.leave(slot, *self._arrays)
        ids = self._ids
        changed = {ids[s] for s in self._out[:n].tolist()}
        ids[slot] = None
        self._free.append(slot)
        self.latlon.pop(pid, None)
        return changed  # type: ignore[return-value]

    def neighbours(self, pid: str) -> set[str]:
        """Who hears ``pid`` (and whom ``pid`` hears: the relation is mutual)."""
        ids = self._ids
        return {ids[s] for s in self._heard_by(self._slot_of(pid)).tolist()}  # type: ignore[misc]

    def audible(self, pid: str) -> dict[str, float]:
        """Whom ``pid`` hears, with gains (the same people hear ``pid`` at the same gains).

        Gains are computed from the current positions when asked, never
        cached, so they cannot be stale; each is a multiple of 1/GAIN_STEPS.
        """
        return {other: gain for other, (gain, _) in self.audible_with_distance(pid).items()}

    def audible_with_distance(self, pid: str) -> dict[str, tuple[float, float]]:
        """``audible`` with each pair's distance: other -> (gain, metres)."""
        others, distance, pair_range = self._pairs(pid)
        if not others.size:
            return {}
        gains = np.rint(self.curve.gains(distance, pair_range) * GAIN_STEPS) / GAIN_STEPS
        ids = self._ids
        return {
            ids[o]: (g, d)  # type: ignore[misc]
            for o, g, d in zip(others.tolist(), gains.tolist(), distance.tolist(), strict=True)
        }

    def audible_rounded(self, pid: str) -> dict[str, tuple[int, float]]:
        """Whom ``pid`` hears as strangers may know it: other -> (rounded metres, gain).

        The distance rounded as ``groups.location.privacy.round_distance_m``
        rounds it, and the gain at that rounded distance (``stranger_gain``),
        vectorized: the nearby room's lists and mix plan come from this.
        """
        others, distance, pair_range = self._pairs(pid)
        if not others.size:
            return {}
        rounded = np.maximum(1.0, np.rint(distance / STRANGER_STEP_M)) * STRANGER_STEP_M
        stepped = np.minimum(rounded, pair_range)
        gains = np.rint(self.curve.gains(stepped, pair_range) * GAIN_STEPS) / GAIN_STEPS
        ids = self._ids
        return {
            ids[o]: (int(m), g)  # type: ignore[misc]
            for o, m, g in zip(others.tolist(), rounded.tolist(), gains.tolist(), strict=True)
        }

    def _pairs(self, pid: str) -> tuple[Int32Array, FloatArray, FloatArray]:
        """The slots ``pid`` hears, their distances and the pairs' ranges (metres)."""
        slot = self._slot_of(pid)
        others = self._heard_by(slot).copy()
        # take rows from the contiguous array, then slice: take() on the strided
        # [:, :3] view would first copy all of it (~3 MB, ~0.6 ms)
        diff = self._points.take(others, axis=0)[:, :3] - self._points[slot, :3]
        chord = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        distance = (2.0 * EARTH_RADIUS_M) * np.arcsin(np.minimum(chord * 0.5, 1.0))
        pair_range = np.minimum(self._radius.take(others), self._radius[slot])
        return others, distance, pair_range

    def audibility(self, pids: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        """listener -> {speaker: gain} for ``pids`` (default: everyone), for the SFU's plan."""
        chosen = self._slot if pids is None else pids
        return {pid: self.audible(pid) for pid in chosen if pid in self._slot}

    def pairs(self) -> set[tuple[str, str]]:
        """Every audible pair once, as (smaller id, larger id): for tests and debugging."""
        out = set()
        for pid, slot in self._slot.items():
            for other in self._heard_by(slot).tolist():
                oid = self._id(other)
                if pid < oid:
                    out.add((pid, oid))
        return out

    def stats(self) -> dict[str, int]:
        """Counters of the index's housekeeping, for benchmarks and debugging."""
        stats = {"slots": len(self._ids), "compactions": self._compactions,
                 "pool_entries": len(self._adj), "cached_ring_cells": self._ring_used}
        for res, (_, _, rebuilds) in zip(self.resolutions, self._counts.tolist(), strict=True):
            stats[f"rebuilds_res{res}"] = rebuilds
        return stats

    # --- slots -----------------------------------------------------------

    def _slot_of(self, pid: str) -> int:
        slot = self._slot.get(pid)
        if slot is None:
            raise NotFound(f"{pid!r} is not in the nearby room")
        return slot

    def _id(self, slot: int) -> str:
        pid = self._ids[slot]
        assert pid is not None
        return pid

    def _heard_by(self, slot: int) -> Int32Array:
        """The slots ``slot`` hears (a view into the kernel's pool: read, don't keep)."""
        start, length, _ = self._adj_meta[slot].tolist()
        return self._adj[start:start + length]

    def _enter(self, pid: str, lat: float, lon: float, radius: float | None) -> int:
        """The slot of ``pid`` (a new one for a newcomer), its radius and coordinates stored."""
        slot = self._slot.get(pid)
        if slot is None:
            if not self._free:
                self._grow()
            slot = self._free.pop()
            self._slot[pid] = slot
            self._ids[slot] = pid
            radius = radius if radius is not None else RADIUS_DEFAULT_M
        if radius is not None:
            self._set_radius(slot, radius)
        self.latlon[pid] = (lat, lon)
        return slot

    def _set_radius(self, slot: int, radius: float) -> None:
        """Store a radius (the kernel copies its cos into the slot's live copy when placing it)."""
        self._radius[slot] = radius
        self._points[slot, layout.COS] = _cos_limit(radius)
        bucket = math.ceil(radius / RADIUS_BUCKET_M)
        level = self._plan_cache.get(bucket)
        if level is None:
            level = self._plan_cache[bucket] = self._plan(bucket * RADIUS_BUCKET_M)
        self._plan_of[slot] = (level, bucket)

    def _move(self, slot: int, lat: float, lon: float) -> set[str]:
        """Place the slot at (lat, lon), recompute its set, patch the pairs; returns who changed."""
        from groups.nearby import kernel  # numba: on first use (see warm_up)
        cells = tuple([h3.latlng_to_cell(lat, lon, res) for res in self.resolutions])
        level, bucket = self._plan_of[slot]
        key = (cells[level], bucket)
        start, length, centre_cos = self._queries.get(key) or self._new_query(*key, trim=True)
        n = kernel.move(slot, lat, lon, cells, level, start, length, centre_cos, *self._arrays)
        attempt = 0
        while n == layout.NEED_SPACE:
            self._make_room(attempt)
            attempt += 1
            n = kernel.move(slot, lat, lon, cells, level, start, length, centre_cos, *self._arrays)
        if not n:
            return set()
        ids = self._ids
        return {ids[s] for s in self._out[:n].tolist()}  # type: ignore[misc]

    def _grow(self) -> None:
        """Double the slots; the cell lists, overflows and audible sets stay valid as they are."""
        old = len(self._ids)
        new = old * 2

        def wider(array: npt.NDArray[T], axis: int) -> npt.NDArray[T]:
            shape = list(array.shape)
            shape[axis] = old
            return np.concatenate([array, np.zeros(shape, dtype=array.dtype)], axis=axis)

        self._points = wider(self._points, 0)
        self._points[old:, layout.COS] = layout.FREE_COS
        self._where = wider(self._where, 1)
        self._order = wider(self._order, 1)
        self._keys = wider(self._keys, 1)
        self._starts = wider(self._starts, 1)
        self._listed = wider(self._listed, 1)
        self._adj_meta = wider(self._adj_meta, 0)
        self._scratch = wider(self._scratch, 1)
        self._out = self._scratch[layout.OUT]
        self._arrays = self._kernel_arrays()
        self._radius = wider(self._radius, 0)
        self._ids.extend([None] * old)
        self._plan_of.extend([(0, 0)] * old)
        self._free.extend(range(new - 1, old - 1, -1))

    def _make_room(self, attempt: int) -> None:
        """Compact the audible-set pool into one with as much free as used (doubled per retry)."""
        from groups.nearby import kernel  # numba: on first use (see warm_up)
        used = kernel.compacted_size(self._adj_meta)
        into = np.zeros(max(2 * used, ADJ_POOL_MIN_ENTRIES) << attempt, dtype=np.int32)
        kernel.compact(self._adj, self._adj_meta, into, self._tallies)
        self._adj = into
        self._arrays = self._kernel_arrays()
        self._compactions += 1

    def _kernel_arrays(self) -> KernelArrays:
        """The kernels' trailing arguments, in their order (rebuilt whenever one is replaced)."""
        return (self._points, self._where, self._order, self._keys, self._starts, self._listed,
                self._overflow, self._over_points, self._counts, self._ring_cells,
                self._ring_centres, self._adj, self._adj_meta, self._tallies, self._scratch)

    # --- rings -----------------------------------------------------------

    def _plan(self, reach_m: float) -> int:
        """The finest resolution whose ring for ``reach_m`` stays within ``max_ring_k``."""
        for index in range(len(self.resolutions) - 1, -1, -1):
            edge = h3.average_hexagon_edge_length(self.resolutions[index], unit="m")
            if _ring_k(reach_m, edge) <= self.max_ring_k:
                return index
        return 0

    def _new_query(self, cell: int, bucket: int, *, trim: bool = False) -> Query:
        """The ring of ``cell`` for radii up to the bucket's, and its centre cut-off.

        The ring (``_ring_k``) covers the disc around any point of the cell;
        the kernel then skips the cells whose centre is further than the
        reach plus a cell's circumradius from the actual point, which
        roughly halves the people examined.
        """
        if trim:
            self._trim_caches()
        reach = bucket * RADIUS_BUCKET_M
        e = self._circumradius.get(cell)
        if e is None:
            e = self._circumradius[cell] = _circumradius_m(cell)
        k = _ring_k(reach, e)
        span = self._rings.get((cell, k))
        if span is None:
            span = self._rings[(cell, k)] = self._pool_ring(h3.grid_disk(cell, k))
        centre_cos = math.cos((reach + e * (1.0 + CELL_SIZE_TOLERANCE)) / EARTH_RADIUS_M)
        query = self._queries[(cell, bucket)] = (*span, centre_cos)
        return query

    def _pool_ring(self, ring: list[int]) -> tuple[int, int]:
        """Append a ring's cells and centres to the pool; returns (start, length)."""
        start, end = self._ring_used, self._ring_used + len(ring)
        if end > len(self._ring_cells):
            size = max(end, 2 * len(self._ring_cells))
            self._ring_cells = np.resize(self._ring_cells, size)
            self._ring_centres = np.resize(self._ring_centres, (size, 3))
            self._arrays = self._kernel_arrays()
        self._ring_cells[start:end] = ring
        self._ring_centres[start:end] = [unit_vector(*h3.cell_to_latlng(c)) for c in ring]
        self._ring_used = end
        return start, len(ring)

    def _trim_caches(self) -> None:
        """Drop the ring caches wholesale when full (cheap to rebuild); never during a batch."""
        if self._ring_used > RING_POOL_MAX_CELLS or len(self._queries) >= CACHE_MAX_ENTRIES:
            self._rings.clear()
            self._queries.clear()
            self._ring_used = 0
        if len(self._circumradius) >= CACHE_MAX_ENTRIES:
            self._circumradius.clear()


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel an index uses; returns seconds taken.

    Runs each path once on a throwaway index: joins, a move across cells, a
    radius change, a batch, a pool compaction and a leave.
    """
    start = time.perf_counter()
    index = ProximityIndex()
    for n, (lat, lon) in enumerate(((0.0, 0.0), (0.001, 0.0), (0.0, 0.002))):
        index.upsert(f"w{n}", lat, lon, RADIUS_DEFAULT_M)
    index.move("w0", 0.01, 0.01)
    index.set_radius("w1", RADIUS_MAX_M)
    index.update_many([("w0", 0.0, 0.0, None), ("w2", 0.0, 0.001, RADIUS_MIN_M)])
    index._make_room(0)
    index.remove("w1")
    global _warm
    _warm = True
    return time.perf_counter() - start


_warm = False
_warm_lock = threading.Lock()


def is_warm() -> bool:
    """Are the kernels loaded in this process (numba imported)?"""
    return _warm


def ensure_warm() -> float:
    """``warm_up`` once per process, from any thread; returns seconds taken (0.0 if done before)."""
    if _warm:
        return 0.0
    with _warm_lock:
        return 0.0 if _warm else warm_up()


def brute_force_pairs(
    people: Mapping[str, tuple[float, float, float]], curve: GainCurve | None = None
) -> dict[tuple[str, str], int]:
    """Every audible pair with its quantized gain, checking all pairs by haversine.

    The reference the index is tested against: no index, no unit vectors,
    just the textbook haversine (vectorized per row so thousands of people
    stay quick), ``(smaller id, larger id) -> gain * GAIN_STEPS``.
    """
    curve = curve or GainCurve()
    ids = sorted(people)
    lat = np.radians([people[p][0] for p in ids])
    lon = np.radians([people[p][1] for p in ids])
    radius = np.array([people[p][2] for p in ids])
    out = {}
    for i in range(len(ids) - 1):
        dlat = lat[i + 1:] - lat[i]
        dlon = lon[i + 1:] - lon[i]
        h = np.sin(dlat / 2) ** 2 + np.cos(lat[i]) * np.cos(lat[i + 1:]) * np.sin(dlon / 2) ** 2
        distance = 2.0 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))
        pair_range = np.minimum(radius[i + 1:], radius[i])
        for j in np.nonzero(distance <= pair_range)[0].tolist():
            out[(ids[i], ids[i + 1 + j])] = curve.quantized(
                float(distance[j]), float(pair_range[j])
            )
    return out


if __name__ == "__main__":  # ``disco serve``'s helper: fill numba's on-disk cache, then exit
    warm_up()
