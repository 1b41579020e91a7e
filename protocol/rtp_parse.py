"""One RTP packet's header read straight from the bytes (RFC 3550, RFC 8285, RFC 6464).

The receive path's per-packet parse (``protocol.aiortc_compat``'s fast path):
only what the inbound audio needs (sequence number, timestamp, payload type,
SSRC, payload, and the ``ssrc-audio-level`` value), without aiortc's
``RtpPacket`` object and its every-extension ``HeaderExtensions``. It reads
what ``aiortc.rtp.RtpPacket.parse`` reads and refuses what it refuses
(``tests/test_rtp_parse.py`` compares the two on the same bytes). Pure.
"""

from __future__ import annotations

from typing import NamedTuple

RTP_HEADER_BYTES = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000
"""RFC 8285's two-byte form (the low 4 bits are "appbits", which aiortc requires to be 0)."""


class RtpHeader(NamedTuple):
    sequence_number: int
    timestamp: int
    payload_type: int
    ssrc: int
    payload: bytes
    audio_level: int | None
    """RFC 6464 level in -dBov (0..127), without the voice-activity bit; None if absent."""


def parse_rtp(data: bytes, audio_level_id: int | None) -> RtpHeader:
    """Read one (unprotected) RTP packet; ``ValueError`` for a malformed one."""
    n = len(data)
    if n < RTP_HEADER_BYTES:
        raise ValueError(f"RTP packet length is less than {RTP_HEADER_BYTES} bytes")
    first = data[0]
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    pos = RTP_HEADER_BYTES + 4 * (first & 0x0F)
    if n < pos:
        raise ValueError("RTP packet has truncated CSRC")
    level: int | None = None
    if first & 0x10:
        if n < pos + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        profile = (data[pos] << 8) | data[pos + 1]
        end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if n < end:
            raise ValueError("RTP packet has truncated extension value")
        level = _audio_level(data, pos + 4, end, profile, audio_level_id)
        pos = end
    if first & 0x20:
        padding = data[-1]
        if not padding or padding > n - pos:
            raise ValueError("RTP packet padding length is invalid")
        payload = data[pos:n - padding]
    else:
        payload = data[pos:]
    return RtpHeader(
        (data[2] << 8) | data[3],
        int.from_bytes(data[4:8], "big"),
        data[1] & 0x7F,
        int.from_bytes(data[8:12], "big"),
        payload,
        level,
    )


def _audio_level(data: bytes, pos: int, end: int, profile: int,
                 wanted: int | None) -> int | None:
    """The audio level element of an RFC 8285 block (checked as aiortc checks it)."""
    level = None
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding
                pos += 1
                continue
            x_id, length = b >> 4, (b & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise ValueError("RTP one-byte header extension value is truncated")
            if x_id == wanted:
                level = data[pos] & 0x7F
            pos += length
    elif profile == TWO_BYTE_PROFILE:
        while pos < end:
            if data[pos] == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError("RTP two-byte header extension is truncated")
            x_id, length = data[pos], data[pos + 1]
            pos += 2
            if pos + length > end:
                raise ValueError("RTP two-byte header extension value is truncated")
            if x_id == wanted and length >= 1:
                level = data[pos] & 0x7F
            pos += length
    return level
