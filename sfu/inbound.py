"""Inbound audio: the RTP packets of one inbound stream -> one 20 ms frame per tick.

``InboundStream`` is the one place where a received payload becomes PCM. Each
RTP packet (sequence number, timestamp, payload, arrival time) goes into a
``protocol.playout.PlayoutStream`` as it arrives: a reorder buffer whose depth
follows the measured jitter (20-100 ms), then libopus at the tick. The
room's clock calls ``pop(now)`` once per tick and gets the frame due: the
packet's audio, the lost one rebuilt from the next packet's in-band FEC, PLC
for the rest, and None (nothing to mix) before the stream starts, in a DTX
pause, or once concealment ran out. RED packets (``audio/red``, RFC 2198)
are unpacked into the same buffer: a redundant copy fills a hole.

``JitterSlot`` (decoded PCM queued for the tick) is what the tick used
before; it stays as the simplest ``FrameSource`` (tests feed it PCM).

Pure apart from libopus: time comes in as ``now``; the aiortc side
(``sfu.peer``) only feeds packets in.
"""

from __future__ import annotations

import collections
import logging
from typing import Protocol

import av
import numpy as np

from protocol.playout import PlayoutStream
from protocol.reorder import ReorderBuffer
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm

logger = logging.getLogger(__name__)

SLOT_MAX_FRAMES = 3
"""Jitter allowance per inbound track: 60 ms; beyond it the oldest frame goes."""
OPUS_MIME = "audio/opus"
RED_MIME = "audio/red"
INITIAL_DEPTH_FRAMES = 1
"""Playout starts on the first packet (the latency of a clean path stays what it was
before reordering: bench/voice); late packets grow the depth (an underrun conceals
without advancing), and measured jitter sets it from the 10th packet on (20-100 ms)."""


LEVEL_STALE_S = 0.1
"""A sender level (RFC 6464) older than this is silence: DTX, or the stream stopped."""
MIN_DBOV = -127.0


class FrameSource(Protocol):
    """What the tick pops once per participant and track: a 20 ms frame or None."""

    @property
    def ready_at(self) -> float | None:
        """When the frame the last ``pop`` returned arrived (None: unknown, or none)."""
        ...

    def pop(self, now: float) -> Pcm | None: ...


class VoiceSource(FrameSource, Protocol):
    """A voice stream the tick may leave undecoded (not among the loudest)."""

    def take_level(self, now: float) -> float | None:
        """The sender's own level since the last call, in dBov (RFC 6464); None: the
        sender does not send it (the room must decode to know)."""
        ...

    def skip(self, now: float) -> None:
        """This tick's turn, not decoded."""
        ...


class JitterSlot:
    """Decoded samples waiting for the next tick; re-chunks any packet size to 20 ms.

    Depth adapts down: a burst (a stalled loop, a network hiccup) can leave
    two or three frames queued, and since frames then arrive and leave at the
    same rate that extra latency would stay forever. If the slot never ran dry
    during the last ``ADAPT_TICKS`` pops, one frame is dropped.

    Pushes may say when their samples arrived (``at``, on all pushes of a
    slot or on none); ``ready_at`` then tells when the frame ``pop`` returned
    became complete (its last sample arrived), so the room can measure how
    long frames wait for the tick.
    """

    ADAPT_TICKS = 50

    def __init__(self, max_frames: int = SLOT_MAX_FRAMES) -> None:
        self._max_samples = max_frames * FRAME_SAMPLES
        self._buffer = np.zeros(0, dtype=np.int16)
        self._arrivals: collections.deque[list[float]] = collections.deque()
        """[arrival time, how many of that push's samples are still buffered], oldest first."""
        self.ready_at: float | None = None
        self.dropped_frames = 0
        self._pops = 0
        self._min_left = max_frames

    def push(self, samples: Pcm, at: float | None = None) -> None:
        buf = np.concatenate((self._buffer, samples)) if self._buffer.size else samples
        if at is not None:
            self._arrivals.append([at, samples.shape[0]])
        excess = buf.shape[0] - self._max_samples
        if excess > 0:
            self.dropped_frames += -(-excess // FRAME_SAMPLES)
            buf = buf[excess:]
            self._consume(excess)
        self._buffer = buf

    def take_level(self, now: float) -> float | None:
        """PCM pushed in carries no sender level: the room measures it."""
        return None

    def skip(self, now: float) -> None:
        self.pop(now)

    def pop(self, now: float | None = None) -> Pcm | None:
        """One 20 ms frame, or None if none is complete (the tick uses silence)."""
        if self._buffer.shape[0] < FRAME_SAMPLES:
            self._min_left = 0
            self._pops += 1
            self.ready_at = None
            return None
        frame, self._buffer = self._buffer[:FRAME_SAMPLES], self._buffer[FRAME_SAMPLES:]
        self.ready_at = self._consume(FRAME_SAMPLES)
        self._pops += 1
        self._min_left = min(self._min_left, self._buffer.shape[0] // FRAME_SAMPLES)
        if self._pops >= self.ADAPT_TICKS:
            if self._min_left >= 1:  # a whole frame of latency never used: shed it
                self._buffer = self._buffer[FRAME_SAMPLES:]
                self._consume(FRAME_SAMPLES)
                self.dropped_frames += 1
            self._pops = 0
            self._min_left = len(self)
        return frame

    def _consume(self, samples: int) -> float | None:
        """Forget the arrival times of ``samples`` leaving; returns the last one's."""
        last = None
        arrivals = self._arrivals
        while samples > 0 and arrivals:
            entry = arrivals[0]
            last = entry[0]
            if entry[1] > samples:
                entry[1] -= samples
                break
            samples -= int(entry[1])  # a count, stored beside a time
            arrivals.popleft()
        return last

    def __len__(self) -> int:
        return self._buffer.shape[0] // FRAME_SAMPLES


class MonoOpusDecoder:
    """Opus payloads straight to 48 kHz mono int16 (libopus downmixes stereo streams)."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"  # type: ignore[attr-defined]
        self._codec.layout = "mono"  # type: ignore[attr-defined]
        self._codec.sample_rate = SAMPLE_RATE_HZ  # type: ignore[attr-defined]

    def decode(self, payload: bytes) -> list[Pcm]:
        frames = self._codec.decode(av.Packet(payload))
        return [np.asarray(f.to_ndarray(), dtype=np.int16).reshape(-1)  # type: ignore[union-attr,misc]
                for f in frames]


class InboundStream:
    """One inbound audio stream: RTP packets in (reordered, recovered), a frame per tick out.

    ``opus_pt`` (the offer's Opus payload type) lets a RED packet's blocks be
    checked; unknown, any block is taken as Opus.
    """

    def __init__(self, label: str = "", *, opus_pt: int | None = None,
                 playout: PlayoutStream | None = None) -> None:
        self.playout = playout if playout is not None else PlayoutStream(
            ReorderBuffer(initial_depth_frames=INITIAL_DEPTH_FRAMES))
        self.packets_in = 0
        self.last_packet_at: float | None = None
        """When the last Opus (or RED) packet arrived: DTX sends one every 400 ms, so a
        silent talker is still heard from; only a vanished one stops."""
        self.ready_at: float | None = None
        self._label = label
        self.opus_pt = opus_pt
        """The offer's Opus payload type: a RED block of another type is skipped."""
        self._warned_codec = False
        self._level_at: float | None = None
        """When the last packet with an RFC 6464 level arrived (None: none ever did)."""
        self._last_level = MIN_DBOV
        self._peak_level: float | None = None
        """The loudest level since ``take_level`` last ran (None: no packet since)."""

    def packet(self, sequence_number: int, timestamp: int, payload: bytes, now: float,
               mime: str = OPUS_MIME, level: int | None = None) -> bool:
        """Take one RTP packet that arrived at ``now``; False if it is not audio we play.

        ``level`` is the packet's RFC 6464 audio level in -dBov (0..127), if it has one.
        """
        if mime not in (OPUS_MIME, RED_MIME):
            if not self._warned_codec:
                self._warned_codec = True
                logger.info("%s: inbound %s is not decoded (Opus only)", self._label, mime)
            return False
        if not payload:
            return False  # padding only
        if mime == RED_MIME:
            self.playout.push_red(sequence_number, timestamp, payload, now,
                                  opus_pt=self.opus_pt)
        else:
            self.playout.push(sequence_number, timestamp, payload, now)
        self.packets_in += 1
        self.last_packet_at = now
        if level is not None:
            dbov = -float(level)
            self._last_level = dbov
            self._level_at = now
            peak = self._peak_level
            self._peak_level = dbov if peak is None or dbov > peak else peak
        return True

    def take_level(self, now: float) -> float | None:
        """The sender's level (dBov) since the last call: the loudest packet's; with no
        packet since, the last one's while under ``LEVEL_STALE_S`` old, then silence.
        None if this sender never sent a level (decode to measure it)."""
        if self._level_at is None:
            return None
        peak, self._peak_level = self._peak_level, None
        if peak is not None:
            return peak
        return self._last_level if now - self._level_at <= LEVEL_STALE_S else MIN_DBOV

    def skip(self, now: float) -> None:
        """This tick's turn without decoding (the room does not mix this sender now)."""
        self.playout.skip(now)
        self.ready_at = None

    def pop(self, now: float) -> Pcm | None:
        """This tick's frame: decoded, recovered or concealed; None when nothing plays."""
        pcm = self.playout.pop(now)
        if self.playout.silent:
            self.ready_at = None
            return None
        self.ready_at = self.playout.buffer.played_arrival
        return pcm
