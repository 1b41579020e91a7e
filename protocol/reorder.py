"""Reordering and loss recovery for one inbound Opus RTP stream (pure, sans-I/O).

The receive path pushes every RTP packet of a stream as it arrives and pops
one decision per 20 ms mixing tick; time comes in as ``now`` (seconds on any
monotonic clock). Nothing here decodes: ``pop`` says what the decoder should
do for this tick's frame, and ``protocol.playout`` does it with ``protocol.opus``:

* ``Frame(payload)``: the packet due now arrived; decode it.
* ``Recover(next_payload)``: the packet due now is lost but the one after it is
  here; decode the lost frame from its in-band FEC (``Decoder.decode_fec``).
* ``Conceal``: lost (or not here yet) with nothing to rebuild it from; PLC.
* ``Silence``: nothing to play: before the stream starts, in a DTX pause, or
  after ``MAX_CONCEAL_FRAMES`` of concealment ran out.

Rules (Janus and WebRTC's NetEQ do the same in spirit):

* Sequence numbers are 16-bit and wrap; they are extended to a running
  integer against the highest seen. RTP timestamps (32-bit) likewise.
* A packet older than the one due next is *late* (dropped, counted); one
  already buffered or already played is a *duplicate* (dropped, counted).
* Playout starts (and restarts after the stream fell silent) once
  ``target_frames`` packets are buffered or the oldest has waited that long.
* A missing packet while later ones are buffered is *lost*: the buffer has
  already waited its depth for it. Missing with the buffer empty is an
  *underrun*: conceal without advancing, so a merely late packet still plays
  (the delay grows by a frame; shedding takes it back when jitter calms). If
  later packets show the missing ones were lost, the ticks already concealed
  stand in for them (they are skipped, not concealed twice), and the last
  one before a packet that arrived is still rebuilt from its FEC if no
  underrun tick covered it.
* DTX: a sender in DTX sends nothing for silent stretches, so the timestamp
  jumps while the sequence number does not. WebRTC marks the entry into DTX
  with a payload of at most ``OPUS_DTX_MAX_BYTES`` bytes (its
  ``WebRtcOpus_Encode`` sends the first TOC-only packet, NetEQ's
  ``IsDtxPacket`` tests the size), so a dry buffer after such a packet is a
  pause: silence, not loss. A timestamp jump to an already buffered next
  packet is played out as silence too.
* Depth grows on loss: a loss sets a floor of ``LOSS_DEPTH_FRAMES`` (so the
  next packet, which carries the lost one's FEC, is in hand when the lost one
  is due) for ``LOSS_HOLD_PACKETS``; when the buffer is shallower than that,
  the lost frame is rebuilt from FEC after the underrun tick that concealed it
  (the delay grows by a frame) instead of being skipped. A buffer started at
  one frame thus costs no latency on a clean path and buys FEC under loss.
* Depth adapts to measured jitter: the 95th percentile of each packet's
  transit delay above the fastest packet of the last ``JITTER_WINDOW_PACKETS``,
  rounded up to frames and bounded to ``MIN_DEPTH_FRAMES..MAX_DEPTH_FRAMES``
  (20-100 ms). If the buffer never ran below target during
  ``SHED_AFTER_POPS`` pops, one frame is skipped to take latency back, at the
  next pause the caller reports (``pop(now, quiet=True)``), so the skip does
  not cut a word. A queue of ``FLUSH_AT_FRAMES`` (300 ms, a stall released at
  once) is cut back to target at once.

Assumes 20 ms packets (the answer's ptime; what browsers send).
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass

SAMPLE_RATE_HZ = 48_000
FRAME_MS = 20
FRAME_TS = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 960 RTP ticks per 20 ms frame
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

MIN_DEPTH_FRAMES = 1
"""20 ms: the least a buffer waits (a tick's phase against arrivals needs one)."""
MAX_DEPTH_FRAMES = 5
"""100 ms: beyond this latency costs more than the odd late packet."""
DEFAULT_DEPTH_FRAMES = 3
"""60 ms until enough packets have been measured, then shed in pauses if too much.
Starting at 40 ms lost frames at the first words under 0-60 ms jitter (offline
pipeline: PESQ 3.1 instead of 3.6 on some seeds)."""
JITTER_MARGIN_MS = 5.0
"""Added to the measured delay spread before rounding up to frames."""
JITTER_QUANTILE = 0.95
JITTER_WINDOW_PACKETS = 100
"""2 s of packets for the delay spread."""
JITTER_MIN_PACKETS = 10
"""Measure only once this many packets arrived (200 ms)."""
JITTER_EVERY_PACKETS = 5
"""Re-measure the spread every 5th packet (100 ms), not on each: sorting the window per
packet was the receive path's largest cost after SRTP (py-spy, bench.voice N = 40)."""
MAX_CONCEAL_FRAMES = 5
"""100 ms of PLC in a row; then silence (libopus's PLC has faded out by then)."""
SHED_AFTER_POPS = 50
"""Judge the depth over 1 s of ticks before skipping a frame."""
FLUSH_AT_FRAMES = 3 * MAX_DEPTH_FRAMES
"""300 ms queued (a stall released at once): drop all but the newest target at once,
rather than keep that delay until pauses shed it a frame at a time."""
MAX_AHEAD_FRAMES = 250
"""A packet more than 5 s ahead of playout means the sender restarted: resync."""
OPUS_DTX_MAX_BYTES = 2
"""An Opus payload this small is a DTX marker (TOC only), as NetEQ decides."""
LOSS_DEPTH_FRAMES = 2
"""After a loss the depth is at least 40 ms: FEC rebuilds a lost frame only from the
next packet, which must be in hand when the lost one is due."""
LOSS_HOLD_PACKETS = 500
"""That floor holds until 10 s of packets pass with no loss."""
RECENT_PLAYED = 128
"""How many played sequence numbers are remembered to tell duplicates from late."""


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Recover:
    """The packet ``seq`` is lost; ``next_payload`` (packet seq+1) carries its FEC."""

    next_payload: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Conceal:
    """Nothing to decode for this tick: PLC. ``seq`` is None on an underrun."""

    seq: int | None


@dataclass(frozen=True, slots=True)
class Silence:
    pass


SILENCE = Silence()
Playout = Frame | Recover | Conceal | Silence


@dataclass
class Counters:
    received: int = 0
    """Primary packets pushed (including the duplicates and late ones below)."""
    delivered: int = 0
    """Sequence numbers whose packet was here in time (played, or skipped as ``shed``)."""
    lost: int = 0
    """Sequence numbers whose time came with no packet (recovered or concealed or skipped)."""
    recovered: int = 0
    """Lost frames handed to FEC from the next packet."""
    red_recovered: int = 0
    """Lost primaries played from a RED packet's redundant copy."""
    concealed: int = 0
    """Ticks filled by PLC (losses without a next packet, and underruns)."""
    underruns: int = 0
    late: int = 0
    duplicate: int = 0
    dtx: int = 0
    """Silent ticks in DTX pauses (not losses)."""
    shed: int = 0
    """Frames skipped to bring the delay back to target."""


@dataclass(slots=True)
class _Packet:
    ts: int
    """Extended RTP timestamp."""
    payload: bytes
    arrival: float
    from_red: bool = False


_SEQ_MASK = SEQ_MOD - 1
_SEQ_HALF = SEQ_MOD >> 1
_TS_MASK = TS_MOD - 1
_TS_HALF = TS_MOD >> 1


def _signed_delta(a: int, b: int, mod: int) -> int:
    """a - b on a wrapping counter, in -mod/2 .. mod/2 - 1."""
    half = mod >> 1
    return (a - b + half) % mod - half


class _Jitter:
    """Transit times of the last ``JITTER_WINDOW_PACKETS`` packets, kept in arrival order
    and sorted (``bisect``: the quantile is read, not sorted, every few packets)."""

    __slots__ = ("_last_transit", "count", "ordered", "rfc3550_s", "transits")

    def __init__(self) -> None:
        self.transits: collections.deque[float] = collections.deque()
        self.ordered: list[float] = []
        """``transits``, sorted."""
        self.rfc3550_s = 0.0
        self._last_transit: float | None = None
        self.count = 0
        """Packets measured so far."""

    def add(self, transit: float) -> bool:
        """Measure one packet; True when it is time to retarget the depth
        (every ``JITTER_EVERY_PACKETS``)."""
        last = self._last_transit
        if last is not None:
            self.rfc3550_s += (abs(transit - last) - self.rfc3550_s) / 16.0
        self._last_transit = transit
        transits, ordered = self.transits, self.ordered
        if len(transits) == JITTER_WINDOW_PACKETS:
            del ordered[bisect.bisect_left(ordered, transits.popleft())]
        transits.append(transit)
        bisect.insort(ordered, transit)
        self.count += 1
        return self.count % JITTER_EVERY_PACKETS == 0

    def spread_s(self) -> float | None:
        ordered = self.ordered
        if len(ordered) < JITTER_MIN_PACKETS:
            return None
        index = min(len(ordered) - 1, math.ceil(JITTER_QUANTILE * len(ordered)) - 1)
        return ordered[index] - ordered[0]


class ReorderBuffer:
    """One inbound stream's packets, released one decision per 20 ms tick."""

    def __init__(self, *, min_depth_frames: int = MIN_DEPTH_FRAMES,
                 max_depth_frames: int = MAX_DEPTH_FRAMES,
                 initial_depth_frames: int = DEFAULT_DEPTH_FRAMES) -> None:
        if not 1 <= min_depth_frames <= initial_depth_frames <= max_depth_frames:
            raise ValueError("need 1 <= min <= initial <= max depth (frames)")
        self.counters = Counters()
        self._min_depth = min_depth_frames
        self._max_depth = max_depth_frames
        self._target = initial_depth_frames
        self._jitter_target = initial_depth_frames
        self._loss_hold_until: int | None = None
        """Extended sequence number up to which the loss floor holds (None: no loss)."""
        self._loss_floor = LOSS_DEPTH_FRAMES
        """The depth floor while it holds (``hold_depth`` may raise it)."""
        self._buf: dict[int, _Packet] = {}
        self._hi_seq: int | None = None
        self._hi_ts_raw = 0
        self._hi_ts = 0
        self._next: int | None = None
        self._playing = False
        self._expect_ts: int | None = None
        self._conceal_run = 0
        self._underrun_run = 0
        """Underrun concealments since the last packet played."""
        self._last_was_dtx = False
        self._in_dtx = False
        self._played: collections.deque[int] = collections.deque(maxlen=RECENT_PLAYED)
        self._played_set: set[int] = set()
        self._jitter = _Jitter()
        self._pops = 0
        self._min_level = math.inf
        self._shed_wanted = False
        self._quiet = True
        self.played_arrival: float | None = None
        """When the packet the last ``Frame`` played arrived (None after any other action)."""

    # --- measurements ------------------------------------------------------

    @property
    def target_frames(self) -> int:
        """Playout depth the buffer aims for, in 20 ms frames (1..5)."""
        return self._target

    @property
    def jitter_s(self) -> float:
        """RFC 3550 interarrival jitter estimate, in seconds (for stats and quality)."""
        return self._jitter.rfc3550_s

    @property
    def highest_seq(self) -> int:
        """The highest sequence number received, extended with its wraps (0 before any)."""
        return self._hi_seq if self._hi_seq is not None else 0

    @property
    def playing(self) -> bool:
        return self._playing

    def __len__(self) -> int:
        return len(self._buf)

    # --- input -------------------------------------------------------------

    def push(self, seq: int, timestamp: int, payload: bytes, now: float, *,
             redundant: bool = False) -> bool:
        """Add one packet; returns False if it was dropped (late, duplicate, known).

        ``redundant`` marks a copy recovered from a RED packet: it only fills a
        hole (never counts as received, duplicate or late, never feeds jitter).
        """
        # The common case inline (a new primary packet, not late, not a restart, not
        # buffered): what ``_push`` does for it, without its calls. Anything else
        # goes to ``_push``, before any state changed.
        hi = self._hi_seq
        if redundant or hi is None or not 0 <= seq < SEQ_MOD:
            return self._push(seq, timestamp, payload, now, redundant)
        ext = hi + ((seq - hi + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF
        nxt = self._next
        buf = self._buf
        if (nxt is not None and (ext < nxt or ext - nxt > MAX_AHEAD_FRAMES)) or ext in buf:
            return self._push(seq, timestamp, payload, now, redundant)
        raw = timestamp & _TS_MASK
        hi_ts = self._hi_ts
        ts = hi_ts + ((raw - self._hi_ts_raw + _TS_HALF) & _TS_MASK) - _TS_HALF
        if ts > hi_ts:
            self._hi_ts_raw = raw
            self._hi_ts = ts
        self.counters.received += 1
        buf[ext] = _Packet(ts, bytes(payload), now, False)
        if ext > hi:
            self._hi_seq = ext
        if self._jitter.add(now - ts / SAMPLE_RATE_HZ):
            self._retarget()
        return True

    def _push(self, seq: int, timestamp: int, payload: bytes, now: float,
              redundant: bool) -> bool:
        """``push``, every case."""
        if not 0 <= seq < SEQ_MOD:
            raise ValueError(f"sequence number must be 16-bit, got {seq}")
        ext = self._extend_seq(seq)
        if self._next is not None and ext - self._next > MAX_AHEAD_FRAMES and not redundant:
            self._resync()
            ext = self._extend_seq(seq)
        ts = self._extend_ts(timestamp, update=not redundant)
        if not redundant:
            self.counters.received += 1
        if self._next is not None and ext < self._next:
            if not redundant:
                if ext in self._played_set:
                    self.counters.duplicate += 1
                else:
                    self.counters.late += 1
            return False
        known = self._buf.get(ext)
        if known is not None:
            if not redundant and not known.from_red:
                self.counters.duplicate += 1
            return False
        self._buf[ext] = _Packet(ts, bytes(payload), now, from_red=redundant)
        if not redundant:
            if self._hi_seq is None or ext > self._hi_seq:
                self._hi_seq = ext
            if self._jitter.add(now - ts / SAMPLE_RATE_HZ):
                self._retarget()
        return True

    def _extend_seq(self, seq: int) -> int:
        if self._hi_seq is None:
            return seq
        return self._hi_seq + _signed_delta(seq, self._hi_seq % SEQ_MOD, SEQ_MOD)

    def _extend_ts(self, timestamp: int, *, update: bool) -> int:
        if self._hi_seq is None and not self._buf:
            self._hi_ts_raw, self._hi_ts = timestamp % TS_MOD, timestamp % TS_MOD
            return self._hi_ts
        ext = self._hi_ts + _signed_delta(timestamp % TS_MOD, self._hi_ts_raw, TS_MOD)
        if update and ext > self._hi_ts:
            self._hi_ts_raw, self._hi_ts = timestamp % TS_MOD, ext
        return ext

    def _retarget(self) -> None:
        spread = self._jitter.spread_s()
        if spread is None:
            return
        frames = math.ceil((spread * 1000.0 + JITTER_MARGIN_MS) / FRAME_MS)
        self._jitter_target = frames
        self._set_target()

    def _set_target(self) -> None:
        hold = self._loss_hold_until
        if hold is not None and self._next is not None and self._next > hold:
            self._loss_hold_until = hold = None
            self._loss_floor = LOSS_DEPTH_FRAMES
        floor = self._loss_floor if hold is not None else self._min_depth
        self._target = max(self._min_depth, floor, min(self._max_depth, self._jitter_target))
        self._target = min(self._target, self._max_depth)

    def _saw_loss(self) -> None:
        assert self._next is not None
        self._loss_hold_until = self._next + LOSS_HOLD_PACKETS
        self._set_target()

    def hold_depth(self, frames: int) -> None:
        """Keep at least ``frames`` buffered (bounded by the maximum depth) for as long
        as a loss holds its floor (``LOSS_HOLD_PACKETS``). ``protocol.red.push_red`` calls
        it when a RED copy filled a hole: the copy came ``k`` frames after its packet's
        turn, so it is in time only with ``k + 1`` frames buffered (else the buffer
        underruns, conceals, and plays the copy a frame late, inside a word)."""
        frames = min(self._max_depth, max(LOSS_DEPTH_FRAMES, frames))
        if self._loss_hold_until is None or frames > self._loss_floor:
            self._loss_floor = frames
        at = self._next if self._next is not None else self.highest_seq
        self._loss_hold_until = at + LOSS_HOLD_PACKETS
        self._set_target()

    def _resync(self) -> None:
        """Forget playout position (a sender restart): the next packets start afresh."""
        self._buf.clear()
        self._hi_seq = None
        self._next = None
        self._playing = False
        self._expect_ts = None
        self._played.clear()
        self._played_set.clear()
        self._jitter = _Jitter()  # a new timestamp base: old transits mean nothing
        self._loss_hold_until = None
        self._loss_floor = LOSS_DEPTH_FRAMES

    # --- output ------------------------------------------------------------

    def pop(self, now: float, *, quiet: bool = True) -> Playout:
        """What to play for this 20 ms tick.

        ``quiet`` says the audio just played was quiet (a pause): only then may a
        frame be skipped to shed extra delay, so the skip falls in a pause, not
        in a word. Callers that cannot tell leave it True.
        """
        self._quiet = quiet
        self.played_arrival = None
        if not self._playing and not self._start(now):
            if self._in_dtx:
                self.counters.dtx += 1
            return SILENCE
        assert self._next is not None
        if self._hi_seq is not None and self._hi_seq - self._next >= FLUSH_AT_FRAMES:
            self._flush()
        packet = self._buf.get(self._next)
        if packet is not None:
            return self._play(packet)
        if self._buf:  # later packets are here: this one is lost
            # Ticks already concealed while the buffer was dry stood in for the
            # missing packets: skip that many rather than conceal them twice
            # (which would add their length to the delay).
            gap = min(self._buf) - self._next
            self._saw_loss()
            skip = min(gap, self._underrun_run)
            if skip == gap and len(self._buf) < self._target:
                # Too shallow for FEC: rebuild the last lost frame from the packet
                # after it rather than skip it (the delay grows by a frame).
                skip -= 1
            if skip:
                self.counters.lost += skip
                self._underrun_run -= skip
                for _ in range(skip):
                    self._advance(self._next, None)
                packet = self._buf.get(self._next)
                if packet is not None:
                    return self._play(packet)
            return self._lose()
        # Nothing buffered at all.
        if self._last_was_dtx:
            self._playing = False
            self._in_dtx = True
            self.counters.dtx += 1
            return SILENCE
        self._conceal_run += 1
        if self._conceal_run > MAX_CONCEAL_FRAMES:
            self._playing = False  # the stream stopped: rebuffer when it resumes
            return SILENCE
        self.counters.underruns += 1
        self.counters.concealed += 1
        self._underrun_run += 1
        return Conceal(None)

    def _start(self, now: float) -> bool:
        if not self._buf:
            return False
        first = min(self._buf)
        oldest = min(p.arrival for p in self._buf.values())
        waited = now - oldest >= self._target * FRAME_MS / 1000.0 - 1e-9
        if len(self._buf) < self._target and not waited:
            return False
        if self._next is not None and first > self._next:
            self.counters.lost += first - self._next
        self._next = first
        self._playing = True
        self._in_dtx = False
        self._expect_ts = None
        self._conceal_run = 0
        self._underrun_run = 0
        self._pops = 0
        self._min_level = math.inf
        self._shed_wanted = False
        return True

    def _play(self, packet: _Packet) -> Playout:
        assert self._next is not None
        if (self._expect_ts is not None and packet.ts - self._expect_ts >= FRAME_TS
                and len(self._buf) <= self._max_depth):
            # A timestamp jump with no sequence gap: a DTX pause, already over.
            self._expect_ts += FRAME_TS
            self.counters.dtx += 1
            return SILENCE
        seq = self._next
        del self._buf[seq]
        self.counters.delivered += 1
        self._advance(seq, packet.ts, played=True)
        self._conceal_run = 0
        self._underrun_run = 0
        self._last_was_dtx = len(packet.payload) <= OPUS_DTX_MAX_BYTES
        if packet.from_red:
            self.counters.red_recovered += 1
        else:
            self.played_arrival = packet.arrival
        self._maybe_shed()
        return Frame(packet.payload, seq % SEQ_MOD)

    def _lose(self) -> Playout:
        assert self._next is not None
        seq = self._next
        self.counters.lost += 1
        self._advance(seq, None)
        following = self._buf.get(seq + 1)
        if following is not None:  # a RED copy is a whole packet: its FEC works too
            self._conceal_run = 0
            self.counters.recovered += 1
            return Recover(following.payload, seq % SEQ_MOD)
        self._conceal_run += 1
        if self._conceal_run > MAX_CONCEAL_FRAMES:
            return SILENCE
        self.counters.concealed += 1
        return Conceal(seq % SEQ_MOD)

    def _advance(self, seq: int, ts: int | None, *, played: bool = False) -> None:
        self._next = seq + 1
        if ts is not None:
            self._expect_ts = ts + FRAME_TS
        elif self._expect_ts is not None:
            self._expect_ts += FRAME_TS
        if not played:
            return
        if len(self._played) == self._played.maxlen:
            self._played_set.discard(self._played[0])
        self._played.append(seq)
        self._played_set.add(seq)

    def _flush(self) -> None:
        """Far too much queued (a stall, then everything at once): keep the newest target."""
        assert self._next is not None and self._hi_seq is not None
        keep_from = self._hi_seq - self._target + 1
        while self._next < keep_from:
            seq = self._next
            packet = self._buf.pop(seq, None)
            if packet is None:
                self.counters.lost += 1
                self._advance(seq, None)
            else:
                self.counters.shed += 1
                self.counters.delivered += 1
                self._advance(seq, packet.ts, played=True)

    def _maybe_shed(self) -> None:
        self._pops += 1
        self._min_level = min(self._min_level, len(self._buf))
        if self._pops >= SHED_AFTER_POPS:
            self._shed_wanted = self._min_level > self._target
            self._pops = 0
            self._min_level = math.inf
        if (self._shed_wanted and self._quiet and len(self._buf) > self._target
                and self._next in self._buf):
            assert self._next is not None
            skipped = self._buf.pop(self._next)
            self._advance(self._next, skipped.ts, played=True)
            self.counters.shed += 1
            self.counters.delivered += 1
            self._shed_wanted = False
