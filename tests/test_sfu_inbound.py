"""``InboundStream``: RTP payloads of one inbound stream -> 20 ms frames in its slot.

Pure apart from libopus: real Opus packets from the server's own encoder,
time passed in. (``JitterSlot``'s depth rules are tested in test_sfu_mixer.py.)
"""

from __future__ import annotations

import math

import numpy as np

from sfu.codec import OpusEncoder
from sfu.inbound import InboundStream, JitterSlot
from sfu.levels import levels_dbov
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ


def opus_packets(count: int, freq_hz: float = 440.0) -> list[bytes]:
    encoder = OpusEncoder()
    n = np.arange(count * FRAME_SAMPLES)
    pcm = (np.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE_HZ) * 8000).astype(np.int16)
    return [encoder.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(count)]


def test_packets_become_frames_with_their_arrival_time() -> None:
    slot = JitterSlot(max_frames=10)
    stream = InboundStream(slot, "alice")
    packets = opus_packets(4)
    for i, payload in enumerate(packets):
        assert stream.packet(100 + i, payload, now=5.0 + i * 0.02) == 1
    assert stream.frames_in == 4 and stream.last_frame_at == 5.06
    frames = [slot.pop() for _ in range(4)]
    assert all(f is not None and f.shape == (FRAME_SAMPLES,) for f in frames)
    assert slot.ready_at == 5.06
    last = frames[-1]
    assert last is not None and float(levels_dbov(last)[0]) > -20  # the tone, not silence


def test_duplicates_and_late_packets_are_dropped_across_the_wrap() -> None:
    slot = JitterSlot(max_frames=10)
    stream = InboundStream(slot)
    p = opus_packets(5)
    assert stream.packet(65_534, p[0], 0.0) == 1
    assert stream.packet(65_534, p[0], 0.0) == 0  # duplicate
    assert stream.packet(65_535, p[1], 0.02) == 1
    assert stream.packet(0, p[2], 0.04) == 1  # the sequence number wraps
    assert stream.packet(65_535, p[1], 0.05) == 0  # late: its time has passed
    assert stream.packet(2, p[4], 0.08) == 1  # a gap is fine: 1 was lost
    assert stream.packet(1, p[3], 0.09) == 0  # and stays lost
    assert len(slot) == 4 and stream.frames_in == 4


def test_other_codecs_and_garbage_add_nothing() -> None:
    slot = JitterSlot()
    stream = InboundStream(slot)
    assert stream.packet(1, b"\xff" * 160, 0.0, mime="audio/pcmu") == 0
    assert stream.packet(2, b"", 0.02) == 0  # padding only (it must not end the decoder)
    assert len(slot) == 0 and stream.last_frame_at is None
    assert stream.packet(3, opus_packets(1)[0], 0.04) == 1  # and the stream goes on
