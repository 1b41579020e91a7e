"""Voice piped between nodes: one speaker's 20 ms frames, framed as bytes, and the
source that plays them into another node's mix. Pure (no I/O; time passed in).

A node that hosts a speaker some listener on another node can hear sends that
speaker's frames (PCM, after the inbound reorder/FEC/PLC path and the mute
check: exactly what its own mix uses) to the listener's node; there a
``PipedSource`` is one more ``FrameSource`` of the media room, a speaker that
is never a listener (``MediaRoom.add_source``).

Wire form of one frame (big-endian): ``b"DV"``, version (1 byte), sequence
number (4 bytes, per speaker, from 0), speaker id length (1 byte), the speaker
id (UTF-8), then ``FRAME_SAMPLES`` int16 samples. A message may hold several
frames back to back (one tick's frames for one node: ``unpack_frames``), so a
node publishes once a tick per node it pipes to. PCM, not Opus: the frame is
already decoded on the sending node and the receiving one mixes PCM, so no
encode (~140 us) and decode (~40 us) per frame and hop, for 1.9 KB per frame
(~96 KB/s per piped speaker and node) over the deployment's own network.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from sfu.errors import BadPipedFrame
from sfu.mixer import FRAME_SAMPLES, Pcm

MAGIC = b"DV"
VERSION = 1
_HEADER = struct.Struct(">2sBIB")
FRAME_BYTES = FRAME_SAMPLES * 2
SPEAKER_ID_MAX_BYTES = 64
PREBUFFER_MIN_FRAMES = 2
"""Frames held before a piped speaker starts playing, at first (40 ms)."""
PREBUFFER_MAX_FRAMES = 6
"""The most the prebuffer grows to after the pipe ran dry (120 ms)."""
QUEUE_SLACK_FRAMES = 4
"""Frames beyond the prebuffer that may wait (80 ms) before the oldest go."""
CALM_TICKS = 500
"""Pops without running dry (10 s) before the prebuffer shrinks by a frame."""
SEQ_MODULO = 1 << 32


@dataclass(frozen=True, slots=True)
class PipedFrame:
    speaker: str
    seq: int
    pcm: Pcm


def pack_frame(speaker: str, seq: int, pcm: Pcm) -> bytes:
    raw = speaker.encode()
    if not raw or len(raw) > SPEAKER_ID_MAX_BYTES:
        raise BadPipedFrame(f"speaker id must be 1..{SPEAKER_ID_MAX_BYTES} bytes")
    if pcm.shape != (FRAME_SAMPLES,):
        raise BadPipedFrame(f"a frame is {FRAME_SAMPLES} samples, not {pcm.shape}")
    return (_HEADER.pack(MAGIC, VERSION, seq % SEQ_MODULO, len(raw)) + raw
            + pcm.astype(">i2", copy=False).tobytes())


def unpack_frame(data: bytes) -> PipedFrame:
    """Exactly one frame."""
    frame, end = _unpack_at(data, 0)
    if end != len(data):
        raise BadPipedFrame(f"piped frame of {len(data)} bytes does not match its header")
    return frame


def unpack_frames(data: bytes) -> list[PipedFrame]:
    """The frames of one message, in order (at least one)."""
    frames: list[PipedFrame] = []
    offset = 0
    while offset < len(data) or not frames:
        frame, offset = _unpack_at(data, offset)
        frames.append(frame)
    return frames


def _unpack_at(data: bytes, offset: int) -> tuple[PipedFrame, int]:
    if len(data) - offset < _HEADER.size:
        raise BadPipedFrame("piped frame too short")
    magic, version, seq, id_len = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or version != VERSION:
        raise BadPipedFrame("not a piped voice frame (or another version)")
    start = offset + _HEADER.size + id_len
    end = start + FRAME_BYTES
    if id_len == 0 or len(data) < end:
        raise BadPipedFrame(f"piped frame of {len(data) - offset} bytes does not match its "
                            "header")
    try:
        speaker = data[offset + _HEADER.size:start].decode()
    except UnicodeDecodeError:
        raise BadPipedFrame("speaker id is not UTF-8") from None
    pcm = np.frombuffer(data, dtype=">i2", count=FRAME_SAMPLES, offset=start).astype(np.int16)
    return PipedFrame(speaker, seq, pcm), end


class PipedSource:
    """One remote speaker's frames, played one a tick (a ``sfu.inbound.FrameSource``).

    Frames come in order (one Redis connection); a sequence number at or below
    the last one queued or taken is a duplicate and ignored; a gap (the speaker
    paused: muted, a DTX pause) closes up, frames are never held for it.

    Depth adapts to the pipe's jitter, as the inbound playout does for RTP: the
    source waits for ``prebuffer`` frames before playing (and again after it ran
    dry); each time it runs dry while playing, ``prebuffer`` grows by one frame
    (up to ``PREBUFFER_MAX_FRAMES``), and after ``CALM_TICKS`` pops without
    running dry it shrinks by one (down to ``PREBUFFER_MIN_FRAMES``). At most
    ``prebuffer + QUEUE_SLACK_FRAMES`` frames wait: a burst after a stall loses
    its oldest frames rather than adding delay for good.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[int, Pcm, float]] = deque()
        self._last_seq: int | None = None
        self._playing = False
        self._ready_at: float | None = None
        self._calm = 0
        self.prebuffer = PREBUFFER_MIN_FRAMES
        self.dropped = 0
        self.underruns = 0

    @property
    def ready_at(self) -> float | None:
        return self._ready_at

    def push(self, seq: int, pcm: Pcm, now: float) -> None:
        last = self._queue[-1][0] if self._queue else self._last_seq
        if last is not None and (seq == last or (seq - last) % SEQ_MODULO >= SEQ_MODULO // 2):
            return  # old or duplicate
        self._queue.append((seq, pcm, now))
        while len(self._queue) > self.prebuffer + QUEUE_SLACK_FRAMES:
            self._queue.popleft()
            self.dropped += 1

    def pop(self, now: float) -> Pcm | None:
        if not self._playing:
            if len(self._queue) < self.prebuffer:
                self._ready_at = None
                return None
            self._playing = True
        if not self._queue:
            self._playing = False
            self.underruns += 1
            self.prebuffer = min(PREBUFFER_MAX_FRAMES, self.prebuffer + 1)
            self._calm = 0
            self._ready_at = None
            return None
        self._calm += 1
        if self._calm >= CALM_TICKS:
            self._calm = 0
            self.prebuffer = max(PREBUFFER_MIN_FRAMES, self.prebuffer - 1)
        seq, pcm, at = self._queue.popleft()
        self._last_seq = seq
        self._ready_at = at
        return pcm
