"""Opus encoding of mixes, done by the server rather than by aiortc.

aiortc's default send path resamples to stereo and encodes at 96 kbps for every
outbound track, and computes an audio level in pure Python (~312 us + 213 us a
frame, docs/architecture.md). Encoding mono at a voice bitrate here, once per *distinct*
mix, and handing aiortc finished ``av.Packet``s skips all of that: its
``RTCRtpSender`` sees a packet, calls ``OpusEncoder.pack`` (bytes + pts
conversion) and sends it.

The SDP says ``opus/48000/2`` but a mono Opus stream is valid there: every
decoder upmixes it.
"""

from __future__ import annotations

import fractions

import av
from av.audio.codeccontext import AudioCodecContext

from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
DEFAULT_BITRATE_BPS = 32_000


class OpusEncoder:
    """One Opus stream: mono, 48 kHz, 20 ms frames, in -> one packet out.

    libopus keeps state between frames (prediction, MDCT overlap), so one
    encoder must keep feeding the same listeners; see ``mixer.assign_encoders``.
    """

    def __init__(self, bitrate_bps: int = DEFAULT_BITRATE_BPS) -> None:
        codec = av.CodecContext.create("libopus", "w")
        assert isinstance(codec, AudioCodecContext)
        codec.bit_rate = bitrate_bps
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE_HZ
        codec.time_base = TIME_BASE
        # "voip" favours intelligibility; music still sounds fine at 32 kbps.
        codec.options = {"application": "voip"}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one 960-sample frame; returns the Opus payload."""
        frame = av.AudioFrame.from_ndarray(
            pcm.reshape(1, FRAME_SAMPLES), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._codec.encode(frame)
        # libopus with 20 ms input returns exactly one packet per frame.
        return b"".join(bytes(p) for p in packets)


def make_packet(payload: bytes, pts: int) -> av.Packet:
    """An ``av.Packet`` that aiortc's sender will pack instead of encoding."""
    packet = av.Packet(payload)
    packet.pts = pts
    packet.time_base = TIME_BASE
    return packet
