"""The proximity index's inner loops, compiled with numba: cell lists, range tests, audible sets.

Pure, arrays in and out; ``groups.nearby.proximity`` owns the arrays, the H3 calls
and the ring caches, and documents why the work is split this way. Every
kernel takes the index's arrays as its trailing arguments, in the order of
``ProximityIndex._kernel_arrays``.

Slots (rows) hold people. ``points[s] = (x, y, z, cos)``: the unit vector
and the cosine of the radius's central angle (``FREE_COS`` on a free slot,
which no dot product reaches). Per H3 resolution ``r``:

- ``where[r, s] = (now, filed, at, over)``: the cell the slot is in (0 when
  free; no H3 cell is 0); the cell of its cell-list entry (0: none) and that
  entry's position; 1 + its overflow position (0: none).
- cell lists, CSR: ``keys[r, :n_keys]`` the occupied cells, sorted; the
  entries of ``keys[r, j]`` are positions ``starts[r, j]:starts[r, j + 1]``
  of ``order[r]`` (slots) and ``listed[r]`` (a copy of each slot's point, so
  a query reads memory in sequence instead of jumping to each slot).
- ``overflow[r, :n_overflow]`` and ``over_points[r]``: the same for slots
  that are in a cell other than the one they are filed under (newcomers,
  border crossings since the last build); every query scans it all.
- ``counts[r] = (n_keys, n_overflow, rebuilds so far)``.

Each live slot has exactly one *live* copy: its list entry when ``now ==
filed``, else its overflow entry. Every other copy is *stale*: its cos is
``FREE_COS``, so a query tests it and it never passes, and a move costs no
list surgery. When an overflow is full, ``_rebuild`` merges the live list
entries (already in cell order) with the sorted overflow: linear time.

Audible sets: slot ``s`` hears ``adj[start:start + length]`` (in no
particular order), ``adj_meta[s] = (start, length, capacity)``: blocks in one
int32 pool; a full block moves to the pool's end (``tallies[ADJ_USED]``).
When the pool is short a kernel changes no set and returns ``NEED_SPACE``;
the caller compacts into a bigger pool (``compact``) and calls again
(placing a person twice is harmless). ``scratch`` rows: the found set, the
listeners whose set changed (a kernel's output), and the stamps ``_settle``
compares sets with.

Compiled code does not check indices. After changing a kernel, run its tests
with ``NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=/tmp/nb-checked`` (a cache of
its own, so that the checked build is compiled rather than loaded).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from groups.nearby.layout import (  # the arrays' layout, shared with groups.nearby.proximity
    ADJ_MIN_CAPACITY,
    ADJ_USED,
    AT,
    CAPACITY,
    COS,
    FILED,
    FOUND,
    FREE_COS,
    LENGTH,
    MARK,
    N_KEYS,
    N_OVERFLOW,
    NEED_SPACE,
    NOW,
    OUT,
    OVER,
    REBUILDS,
    STAMP,
    START,
    X,
    Y,
    Z,
)

FloatArray = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
Cells = tuple[int, ...] | Int64Array


# --- cell lists ---------------------------------------------------------------


@njit(cache=True)
def _copy_point(points: FloatArray, slot: int, dst: FloatArray) -> None:
    dst[X], dst[Y], dst[Z], dst[COS] = (
        points[slot, X], points[slot, Y], points[slot, Z], points[slot, COS])


@njit(cache=True)
def _place(
    slot: int, lat: float, lon: float, new_cells: Cells, points: FloatArray, where: Int64Array,
    order: Int64Array, keys: Int64Array, starts: Int64Array, listed: FloatArray,
    overflow: Int64Array, over_points: FloatArray, counts: Int64Array,
) -> None:
    """Store the slot's point (as ``groups.geo.unit_vector``) and cells; keep its live copy current.

    Radius changes come through here too (same point, new cos).
    """
    phi, lmb = math.radians(lat), math.radians(lon)
    cos_phi = math.cos(phi)
    points[slot, X] = cos_phi * math.cos(lmb)
    points[slot, Y] = cos_phi * math.sin(lmb)
    points[slot, Z] = math.sin(phi)
    for r in range(where.shape[0]):
        cell = new_cells[r]
        where[r, slot, NOW] = cell
        if cell == where[r, slot, FILED]:  # in (or back in) its listed cell
            _copy_point(points, slot, listed[r, where[r, slot, AT]])
            if where[r, slot, OVER]:
                over_points[r, where[r, slot, OVER] - 1, COS] = FREE_COS
            continue
        if where[r, slot, FILED]:
            listed[r, where[r, slot, AT], COS] = FREE_COS
        if not where[r, slot, OVER]:
            if counts[r, N_OVERFLOW] == overflow.shape[1]:
                _rebuild(r, points, where, order, keys, starts, listed, overflow, counts)
                # the slot was in no live copy, so it is filed nowhere now
            overflow[r, counts[r, N_OVERFLOW]] = slot
            counts[r, N_OVERFLOW] += 1
            where[r, slot, OVER] = counts[r, N_OVERFLOW]
        _copy_point(points, slot, over_points[r, where[r, slot, OVER] - 1])


@njit(cache=True)
def _rebuild(
    r: int, points: FloatArray, where: Int64Array, order: Int64Array, keys: Int64Array,
    starts: Int64Array, listed: FloatArray, overflow: Int64Array, counts: Int64Array,
) -> None:
    """Merge resolution r's live list entries and overflow into new cell lists; empty the overflow.

    Afterwards every slot with a live copy is filed under its cell, and no
    other slot is filed anywhere.
    """
    n_over = counts[r, N_OVERFLOW]
    extra_slot = np.empty(n_over, np.int64)
    extra_cell = np.empty(n_over, np.int64)
    n_extra = 0
    for t in range(n_over):
        o = overflow[r, t]
        where[r, o, OVER] = 0
        cell = where[r, o, NOW]
        if cell != 0 and cell != where[r, o, FILED]:
            extra_slot[n_extra] = o
            extra_cell[n_extra] = cell
            n_extra += 1
    by_cell = np.argsort(extra_cell[:n_extra])
    extra_slot = extra_slot[by_cell]
    extra_cell = extra_cell[by_cell]

    n_old = starts[r, counts[r, N_KEYS]]
    kept_slot = np.empty(n_old, np.int64)
    kept_cell = np.empty(n_old, np.int64)
    n_kept = 0
    for j in range(counts[r, N_KEYS]):
        for t in range(starts[r, j], starts[r, j + 1]):
            o = order[r, t]
            if where[r, o, NOW] == keys[r, j] and where[r, o, FILED] == keys[r, j]:
                kept_slot[n_kept] = o
                kept_cell[n_kept] = keys[r, j]
                n_kept += 1

    where[r, :, FILED] = 0
    i = e = n = n_keys = 0
    while i < n_kept or e < n_extra:
        if e == n_extra or (i < n_kept and kept_cell[i] <= extra_cell[e]):
            o, cell = kept_slot[i], kept_cell[i]
            i += 1
        else:
            o, cell = extra_slot[e], extra_cell[e]
            e += 1
        if n_keys == 0 or keys[r, n_keys - 1] != cell:
            keys[r, n_keys] = cell
            starts[r, n_keys] = n
            n_keys += 1
        order[r, n] = o
        _copy_point(points, o, listed[r, n])
        where[r, o, FILED] = cell
        where[r, o, AT] = n
        n += 1
    starts[r, n_keys] = n
    counts[r, N_KEYS] = n_keys
    counts[r, N_OVERFLOW] = 0
    counts[r, REBUILDS] += 1


@njit(cache=True)
def _find(
    slot: int, r: int, ring_start: int, ring_len: int, centre_cos: float,
    points: FloatArray, order: Int64Array, keys: Int64Array, starts: Int64Array,
    listed: FloatArray, overflow: Int64Array, over_points: FloatArray, counts: Int64Array,
    ring_cells: Int64Array, ring_centres: FloatArray, found: Int64Array,
) -> int:
    """Write into ``found`` everyone ``slot`` hears (exact test); returns how many.

    Candidates: the entries of the ring's cells whose centre is within the
    angle of ``centre_cos`` of the point, and the overflow. The test:
    dot(p, q) >= max(cos_p, cos_q), i.e. the distance is within both radii.
    """
    px, py, pz, own = points[slot, X], points[slot, Y], points[slot, Z], points[slot, COS]
    n_keys = counts[r, N_KEYS]
    n = 0
    for i in range(ring_start, ring_start + ring_len):
        centre = ring_centres[i]
        if centre[X] * px + centre[Y] * py + centre[Z] * pz < centre_cos:
            continue
        cell = ring_cells[i]
        lo, hi = 0, n_keys
        while lo < hi:  # binary search among the occupied cells
            mid = (lo + hi) >> 1
            if keys[r, mid] < cell:
                lo = mid + 1
            else:
                hi = mid
        if lo == n_keys or keys[r, lo] != cell:
            continue
        for t in range(starts[r, lo], starts[r, lo + 1]):
            q = listed[r, t]
            if q[X] * px + q[Y] * py + q[Z] * pz >= max(q[COS], own) and order[r, t] != slot:
                found[n] = order[r, t]
                n += 1
    for t in range(counts[r, N_OVERFLOW]):
        q = over_points[r, t]
        if q[X] * px + q[Y] * py + q[Z] * pz >= max(q[COS], own) and overflow[r, t] != slot:
            found[n] = overflow[r, t]
            n += 1
    return n


# --- audible sets -------------------------------------------------------------


@njit(cache=True)
def _grown(length: int) -> int:
    """Capacity of a block that must hold ``length`` entries and room to grow."""
    return max(ADJ_MIN_CAPACITY, length + length // 2)


@njit(cache=True)
def _append(owner: int, value: int, adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array
            ) -> None:
    """Add ``value`` to owner's block (moving the block to the pool's end if it is full)."""
    start, length = adj_meta[owner, START], adj_meta[owner, LENGTH]
    if length == adj_meta[owner, CAPACITY]:
        moved = tallies[ADJ_USED]
        adj_meta[owner, CAPACITY] = _grown(length + 1)
        tallies[ADJ_USED] += adj_meta[owner, CAPACITY]
        adj[moved:moved + length] = adj[start:start + length]
        start = adj_meta[owner, START] = moved
    adj[start + length] = value
    adj_meta[owner, LENGTH] = length + 1


@njit(cache=True)
def _discard(owner: int, value: int, adj: Int32Array, adj_meta: Int64Array) -> None:
    """Take ``value`` out of owner's block (the last entry fills its place)."""
    start, last = adj_meta[owner, START], adj_meta[owner, START] + adj_meta[owner, LENGTH] - 1
    for k in range(start, last + 1):
        if adj[k] == value:
            adj[k] = adj[last]
            adj_meta[owner, LENGTH] -= 1
            return


@njit(cache=True)
def _settle(
    slot: int, n: int, adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array,
    scratch: Int64Array,
) -> int:
    """Make ``scratch[FOUND, :n]`` the slot's set, patching the other side of each changed pair.

    Writes the listeners whose set changed into ``scratch[OUT]`` (the slot
    last, if its set changed at all) and returns how many, or
    ``NEED_SPACE`` having changed no set. Old and new sets are compared by
    stamping: ``scratch[MARK, o]`` is ``stamp`` for the old set's members,
    ``stamp + 1`` for those also found again; stamps only grow, so no
    clean-up is needed.
    """
    found, out, mark = scratch[FOUND], scratch[OUT], scratch[MARK]
    stamp = tallies[STAMP] = tallies[STAMP] + 2
    start, length = adj_meta[slot, START], adj_meta[slot, LENGTH]
    capacity = adj_meta[slot, CAPACITY]
    for i in range(start, start + length):
        mark[adj[i]] = stamp
    kept = 0
    need = _grown(n) if n > capacity else 0  # pool entries the changes below may take
    for j in range(n):
        other = found[j]
        if mark[other] == stamp:
            mark[other] = stamp + 1
            kept += 1
        elif adj_meta[other, LENGTH] == adj_meta[other, CAPACITY]:
            need += _grown(adj_meta[other, LENGTH] + 1)
    if kept == length == n:
        return 0
    if tallies[ADJ_USED] + need > adj.shape[0]:
        return NEED_SPACE
    m = 0
    for i in range(start, start + length):
        if mark[adj[i]] == stamp:  # not found again: gone
            out[m] = adj[i]
            _discard(out[m], slot, adj, adj_meta)
            m += 1
    for j in range(n):
        if mark[found[j]] != stamp + 1:  # new
            out[m] = found[j]
            _append(out[m], slot, adj, adj_meta, tallies)
            m += 1
    if n > capacity:
        start = adj_meta[slot, START] = tallies[ADJ_USED]
        adj_meta[slot, CAPACITY] = _grown(n)
        tallies[ADJ_USED] += adj_meta[slot, CAPACITY]
    adj[start:start + n] = found[:n]
    adj_meta[slot, LENGTH] = n
    out[m] = slot
    return m + 1


# --- entry points (the trailing arguments are ProximityIndex._kernel_arrays) --


@njit(cache=True)
def move(
    slot: int, lat: float, lon: float, new_cells: Cells, r: int,
    ring_start: int, ring_len: int, centre_cos: float,
    points: FloatArray, where: Int64Array, order: Int64Array, keys: Int64Array,
    starts: Int64Array, listed: FloatArray, overflow: Int64Array, over_points: FloatArray,
    counts: Int64Array, ring_cells: Int64Array, ring_centres: FloatArray,
    adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array, scratch: Int64Array,
) -> int:
    """Place one person, find whom they hear (at resolution ``r``, over the given ring) and
    settle the sets: ``_settle``'s answer."""
    _place(slot, lat, lon, new_cells, points, where, order, keys, starts, listed, overflow,
           over_points, counts)
    n = _find(slot, r, ring_start, ring_len, centre_cos, points, order, keys, starts, listed,
              overflow, over_points, counts, ring_cells, ring_centres, scratch[FOUND])
    return _settle(slot, n, adj, adj_meta, tallies, scratch)


@njit(cache=True)
def place_many(
    slots: Int64Array, lats: FloatArray, lons: FloatArray, new_cells: Int64Array,
    points: FloatArray, where: Int64Array, order: Int64Array, keys: Int64Array,
    starts: Int64Array, listed: FloatArray, overflow: Int64Array, over_points: FloatArray,
    counts: Int64Array, ring_cells: Int64Array, ring_centres: FloatArray,
    adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array, scratch: Int64Array,
) -> None:
    """``_place`` for a batch (row i of ``new_cells`` holds slot i's cells)."""
    for i in range(slots.shape[0]):
        _place(slots[i], lats[i], lons[i], new_cells[i], points, where, order, keys, starts,
               listed, overflow, over_points, counts)


@njit(cache=True)
def settle_many(
    first: int, slots: Int64Array, rs: Int64Array, ring_starts: Int64Array,
    ring_lens: Int64Array, centre_coss: FloatArray,
    points: FloatArray, where: Int64Array, order: Int64Array, keys: Int64Array,
    starts: Int64Array, listed: FloatArray, overflow: Int64Array, over_points: FloatArray,
    counts: Int64Array, ring_cells: Int64Array, ring_centres: FloatArray,
    adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array, scratch: Int64Array,
) -> tuple[Int64Array, int]:
    """Find and settle ``slots[first:]`` (already placed): (changed listeners, slots done).

    Stops early, at a slot the pool has no room for, so that the caller can
    make room and go on from there.
    """
    changed = np.empty(max(256, 8 * slots.shape[0]), np.int64)
    total = 0
    for i in range(first, slots.shape[0]):
        n = _find(slots[i], rs[i], ring_starts[i], ring_lens[i], centre_coss[i], points, order,
                  keys, starts, listed, overflow, over_points, counts, ring_cells, ring_centres,
                  scratch[FOUND])
        m = _settle(slots[i], n, adj, adj_meta, tallies, scratch)
        if m == NEED_SPACE:
            return changed[:total], i
        if total + m > changed.shape[0]:
            bigger = np.empty(max(2 * changed.shape[0], total + m), np.int64)
            bigger[:total] = changed[:total]
            changed = bigger
        changed[total:total + m] = scratch[OUT, :m]
        total += m
    return changed[:total], slots.shape[0]


@njit(cache=True)
def leave(
    slot: int,
    points: FloatArray, where: Int64Array, order: Int64Array, keys: Int64Array,
    starts: Int64Array, listed: FloatArray, overflow: Int64Array, over_points: FloatArray,
    counts: Int64Array, ring_cells: Int64Array, ring_centres: FloatArray,
    adj: Int32Array, adj_meta: Int64Array, tallies: Int64Array, scratch: Int64Array,
) -> int:
    """Free a slot: its copies go stale and it leaves everyone's set; ``scratch[OUT, :n]`` are
    those who lost it."""
    points[slot, COS] = FREE_COS
    for r in range(where.shape[0]):
        where[r, slot, NOW] = 0
        if where[r, slot, FILED]:
            listed[r, where[r, slot, AT], COS] = FREE_COS
        if where[r, slot, OVER]:
            over_points[r, where[r, slot, OVER] - 1, COS] = FREE_COS
    start, length = adj_meta[slot, START], adj_meta[slot, LENGTH]
    for i in range(start, start + length):
        scratch[OUT, i - start] = adj[i]
        _discard(scratch[OUT, i - start], slot, adj, adj_meta)
    adj_meta[slot, LENGTH] = 0
    return length


@njit(cache=True)
def compacted_size(adj_meta: Int64Array) -> int:
    """Pool entries ``compact`` will use."""
    used = 0
    for s in range(adj_meta.shape[0]):
        if adj_meta[s, CAPACITY]:
            used += _grown(adj_meta[s, LENGTH])
    return used


@njit(cache=True)
def compact(adj: Int32Array, adj_meta: Int64Array, into: Int32Array, tallies: Int64Array) -> None:
    """Copy every block into ``into``, back to back, each with room to grow (``_grown``)."""
    used = 0
    for s in range(adj_meta.shape[0]):
        start, length = adj_meta[s, START], adj_meta[s, LENGTH]
        capacity = _grown(length) if adj_meta[s, CAPACITY] else 0
        into[used:used + length] = adj[start:start + length]
        adj_meta[s, START] = used
        adj_meta[s, CAPACITY] = capacity
        used += capacity
    tallies[ADJ_USED] = used
