"""Inbound audio: an RTP payload of one inbound stream -> 20 ms frames for the tick.

``InboundStream.packet`` is the one place where a received payload becomes
PCM: it drops late and duplicate packets (by RTP sequence number), decodes
Opus to 48 kHz mono on the event loop as the packet arrives (no decoder
thread, no stereo decode and downmix), and pushes the samples into a
``JitterSlot`` that the room's clock pops once per tick. An Opus RTP packet is
a whole frame, so nothing waits for later packets; the jitter allowance is
the slot's: up to ``SLOT_MAX_FRAMES`` frames, older ones dropped.

Pure apart from libopus: time comes in as ``now``; the aiortc side
(``sfu.peer``) only feeds packets in.
"""

from __future__ import annotations

import collections
import logging

import av
import numpy as np

from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm

logger = logging.getLogger(__name__)

SLOT_MAX_FRAMES = 3
"""Jitter allowance per inbound track: 60 ms; beyond it the oldest frame goes."""
SEQ_MODULO = 1 << 16
SEQ_HALF = 1 << 15
OPUS_MIME = "audio/opus"


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

    def pop(self) -> Pcm | None:
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
    """One inbound audio stream: sequence check, Opus decode, into ``slot``."""

    def __init__(self, slot: JitterSlot, label: str = "") -> None:
        self.slot = slot
        self.frames_in = 0
        self.last_frame_at: float | None = None
        self._label = label
        self._decoder = MonoOpusDecoder()
        self._last_seq: int | None = None
        self._warned_codec = False

    def packet(self, sequence_number: int, payload: bytes, now: float,
               mime: str = OPUS_MIME) -> int:
        """Take one RTP packet that arrived at ``now``; returns the frames it added."""
        last = self._last_seq
        if last is not None:
            delta = (sequence_number - last) % SEQ_MODULO
            if delta == 0 or delta >= SEQ_HALF:
                return 0  # a duplicate, or late: its time has passed
        self._last_seq = sequence_number
        if mime != OPUS_MIME:
            if not self._warned_codec:
                self._warned_codec = True
                logger.info("%s: inbound %s is not decoded (Opus only)", self._label, mime)
            return 0
        if not payload:
            # Padding only. An empty av.Packet would put the decoder into
            # draining mode (end of stream), and it would never decode again.
            return 0
        try:
            frames = self._decoder.decode(payload)
        except (av.FFmpegError, ValueError) as exc:
            logger.debug("%s: undecodable Opus packet: %s", self._label, exc)
            return 0
        for pcm in frames:
            self.slot.push(pcm, now)
        if frames:
            self.frames_in += len(frames)
            self.last_frame_at = now
        return len(frames)
