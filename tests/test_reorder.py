"""The inbound reordering/recovery buffer, table-driven on a simulated 20 ms clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.reorder import (
    FRAME_TS,
    JITTER_MIN_PACKETS,
    JITTER_QUANTILE,
    JITTER_WINDOW_PACKETS,
    LOSS_HOLD_PACKETS,
    MAX_CONCEAL_FRAMES,
    Conceal,
    Frame,
    Playout,
    Recover,
    ReorderBuffer,
    Silence,
    _Jitter,
)

TICK_S = 0.02


def code(p: Playout) -> str:
    """F<seq> frame, R<seq> recover lost seq from next, C<seq>/C- conceal, S silence."""
    if isinstance(p, Frame):
        return f"F{p.seq}"
    if isinstance(p, Recover):
        return f"R{p.seq}"
    if isinstance(p, Conceal):
        return "C-" if p.seq is None else f"C{p.seq}"
    assert isinstance(p, Silence)
    return "S"


Arrival = int | tuple[int, int] | tuple[int, int, bytes]
"""seq (ts = seq * 960, payload b'pkt<seq>'), or (seq, ts), or (seq, ts, payload)."""


def run(ticks: list[list[Arrival]], extra: int = 0,
        buffer: ReorderBuffer | None = None) -> tuple[list[str], ReorderBuffer]:
    """Push each tick's arrivals, then pop once; ``extra`` more empty ticks at the end.

    The tables use a 2-frame start depth (one frame of slack) to keep them short.
    """
    buf = buffer or ReorderBuffer(initial_depth_frames=2)
    out = []
    for i, arrivals in enumerate([*ticks, *([[]] * extra)]):
        now = i * TICK_S
        for a in arrivals:
            if isinstance(a, int):
                seq, ts, payload = a, a * FRAME_TS, b"pkt%d" % a
            elif len(a) == 2:
                seq, ts, payload = a[0], a[1], b"pkt%d" % a[0]
            else:
                seq, ts, payload = a
            buf.push(seq, ts % (1 << 32), payload, now)
        out.append(code(buf.pop(now)))
    return out, buf


CASES = [
    # name, arrivals per tick, extra empty ticks, expected playout, counters subset
    ("in order", [[0], [1], [2], [3]], 0,
     "S F0 F1 F2", {"received": 4, "lost": 0, "late": 0}),
    ("reordered within depth", [[0], [1], [3], [2], [4], [5]], 0,
     "S F0 F1 F2 F3 F4", {"lost": 0, "late": 0}),
    ("one lost: FEC from the next", [[0], [1], [2], [], [4], [5], [6]], 0,
     "S F0 F1 F2 R3 F4 F5", {"lost": 1, "recovered": 1, "concealed": 0}),
    ("two lost: underrun PLC stands in for the first, FEC for the last",
     [[0], [1], [2], [], [], [5], [6], [7]], 0,
     "S F0 F1 F2 C- R4 F5 F6", {"lost": 2, "recovered": 1, "concealed": 1, "underruns": 1}),
    ("delayed, not lost: plays after the underrun", [[0], [1], [2], [], [], [3], [4]], 0,
     "S F0 F1 F2 C- F3 F4", {"lost": 0, "late": 0, "concealed": 1, "underruns": 1}),
    ("reordered too far: lost, then late", [[0], [1], [2], [4], [5], [3], [6]], 0,
     "S F0 F1 F2 R3 F4 F5", {"lost": 1, "recovered": 1, "late": 1}),
    ("duplicates", [[0], [1, 1], [2, 0], [3]], 0,
     "S F0 F1 F2", {"received": 6, "duplicate": 2, "late": 0}),
    ("wrapped sequence numbers", [[65534], [65535], [0], [1]], 0,
     "S F65534 F65535 F0", {"lost": 0, "late": 0}),
    ("loss across the wrap",
     [[(65533, 0)], [(65534, 960)], [(65535, 1920)], [], [(1, 3840)], [(2, 4800)]], 0,
     "S F65533 F65534 F65535 R0 F1", {"lost": 1, "recovered": 1}),
    ("timestamps wrap too", [[(7, 2**32 - 960)], [(8, 0)], [(9, 960)], [(10, 1920)]], 0,
     "S F7 F8 F9", {"lost": 0, "dtx": 0}),
    ("sender stops: PLC runs out, then silence", [[0], [1], [2]], 7,
     "S F0 F1 F2 " + "C- " * MAX_CONCEAL_FRAMES + "S",
     {"concealed": MAX_CONCEAL_FRAMES, "lost": 0}),
    ("DTX pause already buffered: silence, not loss",
     [[0, 1, 2, (3, 8 * FRAME_TS)]], 8,
     "F0 F1 F2 S S S S S F3", {"lost": 0, "dtx": 5, "concealed": 0}),
    ("DTX marker then a pause: silence, not PLC",
     [[0], [1], [(2, 2 * FRAME_TS, b"\x08")], [], [], [], [], [(3, 23 * FRAME_TS)], [4], [5]], 0,
     "S F0 F1 F2 S S S S F3 F4", {"lost": 0, "concealed": 0}),
    ("a burst lost during a stall, restart after it",
     [[0], [1], [2], [], [], [], [], [], [], [], [], [11], [12], [13]], 0,
     "S F0 F1 F2 " + "C- " * MAX_CONCEAL_FRAMES + "S S S F11 F12",
     {"lost": 8, "concealed": MAX_CONCEAL_FRAMES}),
]


@pytest.mark.parametrize(("name", "ticks", "extra", "expected", "counters"), CASES,
                         ids=[c[0] for c in CASES])
def test_playout(name: str, ticks: list[list[Arrival]], extra: int, expected: str,
                 counters: dict[str, int]) -> None:
    out, buf = run(ticks, extra)
    assert " ".join(out) == expected
    got = {k: getattr(buf.counters, k) for k in counters}
    assert got == counters


def test_redundant_copies_fill_holes_only() -> None:
    buf = ReorderBuffer()
    buf.push(0, 0, b"a", 0.0)
    buf.push(1, 960, b"b", 0.0)
    assert not buf.push(0, 0, b"a-red", 0.0, redundant=True)  # already here: ignored
    buf.push(3, 2880, b"d", 0.0)
    assert buf.push(2, 1920, b"c-red", 0.0, redundant=True)  # the hole
    assert not buf.push(2, 1920, b"c", 0.0)  # the primary after its copy: not a duplicate
    out = [buf.pop(0.02 * i) for i in range(4)]
    assert out == [Frame(b"a", 0), Frame(b"b", 1), Frame(b"c-red", 2), Frame(b"d", 3)]
    c = buf.counters
    assert (c.received, c.duplicate, c.late, c.lost, c.red_recovered) == (4, 0, 0, 0, 1)
    assert not buf.push(1, 960, b"b-red", 0.1, redundant=True)  # played: silently ignored
    assert (c.duplicate, c.late) == (0, 0)


def arrivals_with_jitter(n: int, jitter_ms: float, seed: int) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    events = [(i * TICK_S + rng.uniform(0, jitter_ms / 1000), i) for i in range(n)]
    return sorted(events)


@pytest.mark.parametrize(("jitter_ms", "low", "high"), [
    (0.0, 1, 1), (30.0, 2, 2), (60.0, 3, 4), (150.0, 5, 5),
])
def test_depth_follows_measured_jitter(jitter_ms: float, low: int, high: int) -> None:
    buf = ReorderBuffer()
    for at, seq in arrivals_with_jitter(200, jitter_ms, seed=3):
        buf.push(seq, seq * FRAME_TS, b"x", at)
    assert low <= buf.target_frames <= high


def test_jitter_of_60_ms_loses_little() -> None:
    """Uniform 0-60 ms jitter (reorders a third of packets): almost nothing late."""
    buf = ReorderBuffer()
    events = arrivals_with_jitter(1000, 60.0, seed=5)
    played = 0
    i = 0
    for tick in range(1010):
        now = tick * TICK_S + 0.001
        while i < len(events) and events[i][0] <= now:
            buf.push(events[i][1], events[i][1] * FRAME_TS, b"x", events[i][0])
            i += 1
        played += isinstance(buf.pop(now), Frame)
    assert played >= 970, buf.counters
    assert buf.counters.late + buf.counters.lost <= 30


def test_extra_depth_is_shed_in_pauses_only() -> None:
    buf = ReorderBuffer()
    for seq in range(6):  # a burst: five frames more than needed
        buf.push(seq, seq * FRAME_TS, b"xxx", 0.0)
    seq = 6
    for tick in range(200):  # someone talking: no pause to skip a frame in
        buf.push(seq, seq * FRAME_TS, b"xxx", tick * TICK_S)
        seq += 1
        assert isinstance(buf.pop(tick * TICK_S, quiet=False), Frame)
    assert buf.counters.shed == 0
    for tick in range(200, 400):  # a pause
        buf.push(seq, seq * FRAME_TS, b"xxx", tick * TICK_S)
        seq += 1
        buf.pop(tick * TICK_S, quiet=True)
    assert buf.counters.shed >= 3
    assert len(buf) <= buf.target_frames + 1
    assert buf.counters.lost == 0  # shedding is not loss


def test_a_released_stall_is_flushed_to_target() -> None:
    buf = ReorderBuffer()
    for seq in range(5):
        buf.push(seq, seq * FRAME_TS, b"xxx", seq * TICK_S)
        buf.pop(seq * TICK_S)
    for seq in range(5, 40):  # 700 ms of packets stuck in the network, then all at once
        buf.push(seq, seq * FRAME_TS, b"xxx", 0.8)
    first = buf.pop(0.8)
    assert isinstance(first, Frame) and first.seq >= 40 - buf.target_frames
    assert buf.counters.shed >= 30 and buf.counters.lost == 0
    assert len(buf) <= buf.target_frames


def test_sender_restart_resyncs() -> None:
    out, buf = run([[0], [1], [2], [10_000], [10_001], [10_002]])
    assert out == ["S", "F0", "F1", "S", "F10000", "F10001"]
    assert buf.counters.late == 0 and buf.counters.duplicate == 0 and buf.counters.lost == 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        ReorderBuffer().push(70_000, 0, b"x", 0.0)
    with pytest.raises(ValueError, match="depth"):
        ReorderBuffer(min_depth_frames=3, initial_depth_frames=2)


@settings(max_examples=200, deadline=None)
@given(
    first_seq=st.integers(0, 65_535),
    n=st.integers(1, 120),
    loss=st.floats(0.0, 0.5),
    jitter_ms=st.floats(0.0, 120.0),
    dup=st.floats(0.0, 0.2),
    seed=st.integers(0, 2**16),
)
def test_invariants_under_any_arrival_order(first_seq: int, n: int, loss: float,
                                            jitter_ms: float, dup: float, seed: int) -> None:
    """Whatever arrives when: each seq plays at most once, in order, as its own payload."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        if rng.random() < loss:
            continue
        seq = (first_seq + i) % 65_536
        for _ in range(2 if rng.random() < dup else 1):
            events.append((i * TICK_S + rng.uniform(0, jitter_ms / 1000), seq, i))
    events.sort()
    buf = ReorderBuffer()
    out: list[Playout] = []
    j = 0
    for tick in range(n + 20):
        now = tick * TICK_S + 0.005
        while j < len(events) and events[j][0] <= now:
            at, seq, i = events[j]
            buf.push(seq, (i * FRAME_TS) % 2**32, b"pkt%d" % i, at)
            j += 1
        out.append(buf.pop(now))
    played = [p for p in out if isinstance(p, Frame)]
    index = [int(p.payload[3:]) for p in played]
    assert index == sorted(set(index))  # in order, never twice
    assert all((first_seq + i) % 65_536 == p.seq for i, p in zip(index, played, strict=True))
    recovered = {p.seq for p in out if isinstance(p, Recover)}
    assert not recovered & {p.seq for p in played}
    c = buf.counters
    assert c.received == len(events)
    assert len(played) + c.late + c.duplicate + c.shed + len(buf) == c.received
    assert c.delivered == len(played) + c.shed


def test_a_loss_deepens_a_one_frame_buffer_for_fec_and_the_floor_expires() -> None:
    """Started at one frame (the server's choice: no latency on a clean path): the first
    loss is an underrun, then rebuilt from FEC a frame late; the depth stays two frames
    (the next packet in hand) until LOSS_HOLD_PACKETS pass without loss."""
    buf = ReorderBuffer(initial_depth_frames=1)
    out = []
    total = 30 + LOSS_HOLD_PACKETS + 20
    for k in range(total):
        if k not in (10, 20):
            buf.push(k, k * FRAME_TS, b"xyz", k * TICK_S)
        out.append(buf.pop(k * TICK_S))
    assert out[0] == Frame(b"xyz", 0)  # plays at once
    assert out[10] == Conceal(None) and out[11] == Recover(b"xyz", 10)  # late, from FEC
    assert out[12] == Frame(b"xyz", 11)
    assert out[21] == Recover(b"xyz", 20)  # a frame later now, 21 in hand: no underrun
    assert buf.counters.lost == 2 and buf.counters.recovered == 2
    assert buf.counters.concealed == 1
    assert buf.target_frames == 1  # the floor expired with no loss since


class _GeneralPushOnly(ReorderBuffer):
    """Every packet through ``_push`` (the general case), never ``push``'s inline one."""

    def push(self, seq: int, timestamp: int, payload: bytes, now: float, *,
             redundant: bool = False) -> bool:
        return self._push(seq, timestamp, payload, now, redundant)


@settings(max_examples=200, deadline=None)
@given(
    first_seq=st.integers(0, 65_535),
    first_ts=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    loss=st.floats(0.0, 0.5),
    jitter_ms=st.floats(0.0, 150.0),
    dup=st.floats(0.0, 0.2),
    restart_at=st.integers(0, 400),
    seed=st.integers(0, 2**16),
)
def test_inline_push_decides_as_the_general_one(first_seq: int, first_ts: int, n: int,
                                                loss: float, jitter_ms: float, dup: float,
                                                restart_at: int, seed: int) -> None:
    """``push``'s inline common case (issue #15) changes nothing: the same packets, in the
    same order, give the same decisions, counters, depth and jitter as ``_push`` alone,
    across sequence and timestamp wraps, losses, duplicates, reordering and a restart."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        if rng.random() < loss:
            continue
        restarted = i >= restart_at
        seq = (first_seq + i + (30_000 if restarted else 0)) % 65_536
        ts = (first_ts + i * FRAME_TS + (123_456 if restarted else 0)) % 2**32
        for _ in range(2 if rng.random() < dup else 1):
            events.append((i * TICK_S + rng.uniform(0, jitter_ms / 1000), seq, ts, i))
    events.sort()
    fast, general = ReorderBuffer(initial_depth_frames=1), _GeneralPushOnly(initial_depth_frames=1)
    j = 0
    for tick in range(n + 20):
        now = tick * TICK_S + 0.005
        while j < len(events) and events[j][0] <= now:
            at, seq, ts, i = events[j]
            payload = b"pkt%d" % i
            assert fast.push(seq, ts, payload, at) == general.push(seq, ts, payload, at)
            j += 1
        assert fast.pop(now) == general.pop(now)
        assert fast.counters == general.counters
        assert (fast.target_frames, fast.highest_seq, len(fast)) == (
            general.target_frames, general.highest_seq, len(general))
        assert fast.jitter_s == general.jitter_s


def test_hold_depth_raises_the_floor_within_bounds_and_it_expires() -> None:
    buf = ReorderBuffer(initial_depth_frames=1, max_depth_frames=4)
    for k in range(20):
        buf.push(k, k * FRAME_TS, b"xyz", k * TICK_S)
        buf.pop(k * TICK_S)
    assert buf.target_frames == 1
    buf.hold_depth(3)
    assert buf.target_frames == 3
    buf.hold_depth(2)  # a lower floor does not lower a held one
    assert buf.target_frames == 3
    buf.hold_depth(9)
    assert buf.target_frames == 4  # bounded by the maximum depth
    for k in range(20, 40 + LOSS_HOLD_PACKETS):
        buf.push(k, k * FRAME_TS, b"xyz", k * TICK_S)
        buf.pop(k * TICK_S)
    assert buf.target_frames == 1


@settings(max_examples=200, deadline=None)
@given(transits=st.lists(st.floats(-5.0, 5.0, allow_nan=False), max_size=350),
       repeat=st.integers(1, 3))
def test_jitter_spread_is_the_quantile_of_the_last_window(transits: list[float],
                                                         repeat: int) -> None:
    """The kept-sorted window (issue #15: no sort every few packets) reads the same spread
    as sorting the last ``JITTER_WINDOW_PACKETS`` transits, duplicates included."""
    jitter = _Jitter()
    seen: list[float] = []
    for t in (x for x in transits for _ in range(repeat)):
        jitter.add(t)
        seen.append(t)
        window = sorted(seen[-JITTER_WINDOW_PACKETS:])
        if len(window) < JITTER_MIN_PACKETS:
            assert jitter.spread_s() is None
        else:
            index = min(len(window) - 1, math.ceil(JITTER_QUANTILE * len(window)) - 1)
            assert jitter.spread_s() == window[index] - window[0]
    assert jitter.count == len(seen)
