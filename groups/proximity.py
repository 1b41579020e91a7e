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
around any point of the cell (see ``_ring_k``). Each cell keeps its people as
a numpy array (rebuilt only when someone crosses its border), so a query is
one concatenation and a handful of vectorized steps: candidates are tested
exactly by the dot product of unit vectors (cos of the central angle), which
is the haversine test without trig per pair (``groups.geo``).

Audible *sets* are kept current on every update; *gains* are computed from
the current positions when asked (``audible``), so they are never stale and
a move costs nothing per unchanged neighbour.

An update (move, radius change, join, leave) recomputes the mover's set,
patches the other side of each pair that appeared or vanished, and returns
exactly the listeners whose set changed. The mover's neighbours hear the
mover at a new gain after any move: refresh ``audibility(changed |
neighbours(mover))`` for ``MediaRoom.set_audibility`` at whatever rate the
mixer wants.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from h3.api import basic_int as h3

from common.errors import BadRequest, NotFound
from groups.geo import EARTH_RADIUS_M, haversine_m, unit_vector
from groups.location import validate_lat_lon

log = logging.getLogger(__name__)

RADIUS_MIN_M = 100.0
RADIUS_MAX_M = 2_000.0
RADIUS_DEFAULT_M = 500.0
GAIN_STEPS = 100  # gains are multiples of 1/GAIN_STEPS
RESOLUTIONS = (8, 9)  # H3 resolutions people are filed under (edges ~530 and ~200 m)
MAX_RING_K = 3  # a query ring holds at most 3k(k+1)+1 = 37 cells
RADIUS_BUCKET_M = 50.0  # ring sizes are planned per 50 m of radius
RING_SAFETY = 1.25  # H3's rings reach up to 13 % less far than a flat lattice's (see _ring_k)
CELL_SIZE_TOLERANCE = 0.05  # a nearby cell's circumradius is within 5 % of the query cell's
CACHE_MAX_ENTRIES = 200_000  # per cache; cleared wholesale when full (cheap to rebuild)

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
_EMPTY = np.empty(0, dtype=np.intp)


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
        max_ring_k: int = MAX_RING_K,
    ) -> None:
        self.curve = curve or GainCurve()
        self.resolutions = tuple(sorted(resolutions))
        self.max_ring_k = max_ring_k
        capacity = 1024
        self._xyz: FloatArray = np.zeros((capacity, 3))
        self._cos: FloatArray = np.full(capacity, 2.0)  # cos limit of each radius; 2: free slot
        self._radius: FloatArray = np.zeros(capacity)
        self._ids: list[str | None] = [None] * capacity
        self._slot: dict[str, int] = {}
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._cell_of: list[list[int]] = [[0] * capacity for _ in self.resolutions]
        self._members: list[dict[int, IntArray]] = [{} for _ in self.resolutions]
        self._nbr: list[set[int]] = [set() for _ in range(capacity)]
        self._plan_cache: dict[int, tuple[int, float]] = {}
        self._circumradius: dict[int, float] = {}
        self._disk_cache: dict[tuple[int, int], tuple[npt.NDArray[np.int64], FloatArray]] = {}
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
        validate_lat_lon(lat, lon)
        radius = validate_radius(radius_m) if radius_m is not None else None
        return self._refresh(self._position(pid, lat, lon, radius))

    def _position(self, pid: str, lat: float, lon: float, radius: float | None) -> int:
        """File a validated position (and radius, if given) under ``pid``; returns its slot."""
        slot = self._slot.get(pid)
        if slot is None:
            slot = self._allocate(pid)
            radius = radius if radius is not None else RADIUS_DEFAULT_M
        if radius is not None:
            self._radius[slot] = radius
            self._cos[slot] = _cos_limit(radius)
        self._place(slot, lat, lon)
        self.latlon[pid] = (lat, lon)
        return slot

    def update_many(
        self, updates: Iterable[tuple[str, float, float, float | None]]
    ) -> set[str]:
        """Apply a batch of (pid, lat, lon, radius or None) at once; returns changed listeners.

        Why: numpy's per-call overhead dominates one small query, so a batch
        (say, every fix that arrived during one 20 ms mixer tick) shares each
        vectorized step across all its movers. The result is exactly that of
        applying the updates one by one (the last position and radius per person win):
        every position is placed first, then every mover's set is computed
        against the same, final positions, so a pair of movers is judged
        consistently from both sides. Everything is validated before
        anything changes.
        """
        latest: dict[str, tuple[float, float, float | None]] = {}
        for pid, lat, lon, radius_m in updates:
            validate_lat_lon(lat, lon)
            radius = validate_radius(radius_m) if radius_m is not None else None
            if radius is None and pid in latest:
                radius = latest[pid][2]  # an earlier radius change in the batch still counts
            latest[pid] = (lat, lon, radius)
        slots = [self._position(pid, lat, lon, radius)
                 for pid, (lat, lon, radius) in latest.items()]
        changed: set[str] = set()
        for slot, found in zip(slots, self._compute_many(slots), strict=True):
            changed |= self._apply(slot, found)
        return changed

    def move(self, pid: str, lat: float, lon: float) -> set[str]:
        """A known person's new position; returns changed listeners."""
        self._slot_of(pid)
        return self.upsert(pid, lat, lon)

    def set_radius(self, pid: str, radius_m: float) -> set[str]:
        """A known person's new radius; returns changed listeners."""
        slot = self._slot_of(pid)
        radius = validate_radius(radius_m)
        self._radius[slot] = radius
        self._cos[slot] = _cos_limit(radius)
        return self._refresh(slot)

    def remove(self, pid: str) -> set[str]:
        """Take a person out; returns the listeners who lost them (and not the person)."""
        slot = self._slot.pop(pid, None)
        if slot is None:
            return set()
        changed = set()
        for other in self._nbr[slot]:
            self._nbr[other].discard(slot)
            changed.add(self._id(other))
        self._nbr[slot] = set()
        for index, res_cells in enumerate(self._cell_of):
            self._leave_cell(index, res_cells[slot], slot)
            res_cells[slot] = 0
        self._cos[slot] = 2.0
        self._ids[slot] = None
        self._free.append(slot)
        self.latlon.pop(pid, None)
        return changed

    def neighbours(self, pid: str) -> set[str]:
        """Who hears ``pid`` (and whom ``pid`` hears: the relation is mutual)."""
        return {self._id(s) for s in self._nbr[self._slot_of(pid)]}

    def audible(self, pid: str) -> dict[str, float]:
        """Whom ``pid`` hears, with gains (the same people hear ``pid`` at the same gains).

        Gains are computed from the current positions when asked, never
        cached, so they cannot be stale; each is a multiple of 1/GAIN_STEPS.
        """
        slot = self._slot_of(pid)
        members = self._nbr[slot]
        if not members:
            return {}
        others = np.fromiter(members, dtype=np.intp, count=len(members))
        diff = self._xyz.take(others, axis=0) - self._xyz[slot]
        chord = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        distance = (2.0 * EARTH_RADIUS_M) * np.arcsin(np.minimum(chord * 0.5, 1.0))
        pair_range = np.minimum(self._radius[others], self._radius[slot])
        gains = np.rint(self.curve.gains(distance, pair_range) * GAIN_STEPS) / GAIN_STEPS
        ids = self._ids
        return {ids[o]: g for o, g in zip(others.tolist(), gains.tolist(), strict=True)}  # type: ignore[misc]

    def audibility(self, pids: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        """listener -> {speaker: gain} for ``pids`` (default: everyone), for the SFU's plan."""
        chosen = self._slot if pids is None else pids
        return {pid: self.audible(pid) for pid in chosen if pid in self._slot}

    def distance_m(self, a: str, b: str) -> float:
        (lat1, lon1), (lat2, lon2) = self.latlon[a], self.latlon[b]
        return haversine_m(lat1, lon1, lat2, lon2)

    def pairs(self) -> set[tuple[str, str]]:
        """Every audible pair once, as (smaller id, larger id): for tests and debugging."""
        out = set()
        for pid, slot in self._slot.items():
            for other in self._nbr[slot]:
                oid = self._id(other)
                if pid < oid:
                    out.add((pid, oid))
        return out

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

    def _allocate(self, pid: str) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slot[pid] = slot
        self._ids[slot] = pid
        return slot

    def _grow(self) -> None:
        old = len(self._ids)
        new = old * 2
        self._xyz = np.concatenate([self._xyz, np.zeros((old, 3))])
        self._cos = np.concatenate([self._cos, np.full(old, 2.0)])
        self._radius = np.concatenate([self._radius, np.zeros(old)])
        self._ids.extend([None] * old)
        for res_cells in self._cell_of:
            res_cells.extend([0] * old)
        self._nbr.extend(set() for _ in range(old))
        self._free.extend(range(new - 1, old - 1, -1))

    # --- cells -----------------------------------------------------------

    def _place(self, slot: int, lat: float, lon: float) -> None:
        self._xyz[slot] = unit_vector(lat, lon)
        for index, res in enumerate(self.resolutions):
            cell = h3.latlng_to_cell(lat, lon, res)
            old = self._cell_of[index][slot]
            if cell != old:
                if old:
                    self._leave_cell(index, old, slot)
                members = self._members[index]
                arr = members.get(cell)
                members[cell] = np.array([slot]) if arr is None else np.append(arr, slot)
                self._cell_of[index][slot] = cell

    def _leave_cell(self, index: int, cell: int, slot: int) -> None:
        members = self._members[index]
        arr = members.get(cell)
        if arr is None:
            return
        arr = arr[arr != slot]
        if arr.size:
            members[cell] = arr
        else:
            del members[cell]

    def _plan(self, radius_m: float) -> tuple[int, float]:
        """(resolution index, bucketed radius) for a query of ``radius_m``."""
        bucket = math.ceil(radius_m / RADIUS_BUCKET_M)
        plan = self._plan_cache.get(bucket)
        if plan is None:
            reach = bucket * RADIUS_BUCKET_M
            chosen = 0
            for index in range(len(self.resolutions) - 1, -1, -1):
                edge = h3.average_hexagon_edge_length(self.resolutions[index], unit="m")
                if _ring_k(reach, edge) <= self.max_ring_k:
                    chosen = index
                    break
            plan = (chosen, reach)
            self._plan_cache[bucket] = plan
        return plan

    def _near_cells(self, index: int, slot: int, reach_m: float) -> list[int]:
        """The cells of the slot's ring that can hold a point within ``reach_m`` of it.

        The ring (``_ring_k``) covers the disc around any point of the cell;
        this then keeps only the cells whose centre is within ``reach_m``
        plus a cell's circumradius of the actual point, which roughly
        halves the people examined.
        """
        cell = self._cell_of[index][slot]
        e = self._circumradius.get(cell)
        if e is None:
            if len(self._circumradius) >= CACHE_MAX_ENTRIES:
                self._circumradius.clear()
            e = self._circumradius[cell] = _circumradius_m(cell)
        k = _ring_k(reach_m, e)
        entry = self._disk_cache.get((cell, k))
        if entry is None:
            if len(self._disk_cache) >= CACHE_MAX_ENTRIES:
                self._disk_cache.clear()
            ring = h3.grid_disk(cell, k)
            centres = np.array([unit_vector(*h3.cell_to_latlng(c)) for c in ring])
            entry = self._disk_cache[(cell, k)] = (np.array(ring, dtype=np.int64), centres)
        ring_cells, centres = entry
        limit = math.cos((reach_m + e * (1.0 + CELL_SIZE_TOLERANCE)) / EARTH_RADIUS_M)
        near: list[int] = ring_cells[centres @ self._xyz[slot] >= limit].tolist()
        return near

    def _candidates(self, index: int, disk: list[int]) -> IntArray:
        members = self._members[index]
        parts = [arr for cell in disk if (arr := members.get(cell)) is not None]
        if not parts:
            return _EMPTY
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # --- audible sets ----------------------------------------------------

    def _compute(self, slot: int) -> set[int]:
        """slot's audible neighbours, from the index (exact chord test on ring candidates)."""
        index, reach = self._plan(float(self._radius[slot]))
        cand = self._candidates(index, self._near_cells(index, slot, reach))
        if cand.size == 0:
            return set()
        dot = self._xyz.take(cand, axis=0) @ self._xyz[slot]
        limit = self._cos.take(cand)
        np.maximum(limit, self._cos[slot], out=limit)
        found = set(cand[dot >= limit].tolist())
        found.discard(slot)
        return found

    def _compute_many(self, slots: list[int]) -> list[set[int]]:
        """``_compute`` for many slots with one set of vectorized steps."""
        if not slots:
            return []
        parts: list[IntArray] = []
        parts_per_slot = []
        radius, all_members = self._radius, self._members
        for slot in slots:
            index, reach = self._plan(float(radius[slot]))
            members = all_members[index]
            near = self._near_cells(index, slot, reach)
            mine = [arr for c in near if (arr := members.get(c)) is not None]
            parts.extend(mine)
            parts_per_slot.append(len(mine))
        if not parts:
            return [set() for _ in slots]
        cand = np.concatenate(parts)
        part_sizes = np.fromiter((p.size for p in parts), dtype=np.intp, count=len(parts))
        segment = np.repeat(np.repeat(np.arange(len(slots)), parts_per_slot), part_sizes)
        owner = np.asarray(slots, dtype=np.intp).take(segment)
        dot = np.einsum("ij,ij->i", self._xyz.take(cand, axis=0), self._xyz.take(owner, axis=0))
        limit = np.maximum(self._cos.take(cand), self._cos.take(owner))
        mask = (dot >= limit) & (cand != owner)
        hits = cand[mask].tolist()
        counts = np.bincount(segment[mask], minlength=len(slots)).tolist()
        out = []
        start = 0
        for count in counts:
            out.append(set(hits[start:start + count]))
            start += count
        return out

    def _refresh(self, slot: int) -> set[str]:
        return self._apply(slot, self._compute(slot))

    def _apply(self, slot: int, new: set[int]) -> set[str]:
        """Make ``new`` the slot's set, patching the other side of each changed pair."""
        old = self._nbr[slot]
        if new == old:
            return set()
        nbr = self._nbr
        added = new - old
        removed = old - new
        for other in added:
            nbr[other].add(slot)
        for other in removed:
            nbr[other].discard(slot)
        nbr[slot] = new
        ids = self._ids
        changed = {ids[other] for other in added}
        changed.update(ids[other] for other in removed)
        changed.add(ids[slot])
        return changed  # type: ignore[return-value]


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
