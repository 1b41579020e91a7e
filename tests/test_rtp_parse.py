"""The receive path's RTP header read, against aiortc's ``RtpPacket.parse`` on the same bytes."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from protocol.rtp_parse import parse_rtp

LEVEL_ID = 2
MID_ID = 1
ABS_SEND_TIME_ID = 3


def aiortc_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=MID_ID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=LEVEL_ID, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        RTCRtpHeaderExtensionParameters(
            id=ABS_SEND_TIME_ID,
            uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ]))
    return m


def rtp(*, seq: int = 7, ts: int = 960, pt: int = 111, ssrc: int = 0xDEADBEEF,
        csrc: int = 0, ext: bytes | None = None, profile: int = 0xBEDE,
        payload: bytes = b"\xf8opus", padding: int = 0, marker: int = 1) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if ext is not None else 0) | csrc
    out = struct.pack("!BBHLL", first, (marker << 7) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!L", 1000 + i) for i in range(csrc))
    if ext is not None:
        ext += b"\x00" * (-len(ext) % 4)
        out += struct.pack("!HH", profile, len(ext) // 4) + ext
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


ONE_BYTE = bytes([(MID_ID << 4) | 0]) + b"0" + bytes([(LEVEL_ID << 4) | 0, 0x80 | 42])
ABS = bytes([(ABS_SEND_TIME_ID << 4) | 2]) + b"\x01\x02\x03"

VALID = {
    "plain": rtp(),
    "no marker, wrapping numbers": rtp(seq=65_535, ts=4_294_967_295, marker=0),
    "two CSRCs": rtp(csrc=2),
    "mid and level, one-byte form": rtp(ext=ONE_BYTE),
    "level after abs-send-time and padding bytes": rtp(
        ext=ABS + b"\x00\x00" + bytes([(LEVEL_ID << 4) | 0, 127])),
    "no level element": rtp(ext=ABS),
    "two-byte form": rtp(profile=0x1000, ext=bytes([MID_ID, 1]) + b"0"
                         + bytes([LEVEL_ID, 1, 0x05])),
    "unknown profile": rtp(profile=0x1234, ext=b"\x11\x22\x33\x44"),
    "padding": rtp(padding=4),
    "padding and extension and CSRC": rtp(csrc=1, ext=ONE_BYTE, padding=3),
    "empty payload": rtp(payload=b""),
}


@pytest.mark.parametrize("data", list(VALID.values()), ids=list(VALID))
def test_reads_what_aiortc_reads(data: bytes) -> None:
    theirs = RtpPacket.parse(data, aiortc_map())
    ours = parse_rtp(data, LEVEL_ID)
    level = theirs.extensions.audio_level
    assert ours == (theirs.sequence_number, theirs.timestamp, theirs.payload_type,
                    theirs.ssrc, theirs.payload, None if level is None else level[1])


def test_without_a_negotiated_level_there_is_none() -> None:
    assert parse_rtp(rtp(ext=ONE_BYTE), None).audio_level is None


INVALID = {
    "short": rtp()[:11],
    "version 1": bytes([0x40]) + rtp()[1:],
    "truncated CSRC": rtp(csrc=3, payload=b"")[:20],
    "truncated extension header": rtp(ext=b"")[:14],
    "truncated extension value": rtp(ext=ONE_BYTE, payload=b"")[:18],
    "one-byte element past the block": rtp(ext=bytes([(LEVEL_ID << 4) | 7, 1, 2])),
    "zero padding length": rtp(padding=1)[:-1] + b"\x00",
    "padding longer than the payload": rtp(payload=b"ab", padding=2)[:-1] + b"\x09",
}


@pytest.mark.parametrize("data", list(INVALID.values()), ids=list(INVALID))
def test_refuses_what_aiortc_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        RtpPacket.parse(data, aiortc_map())
    with pytest.raises(ValueError):
        parse_rtp(data, LEVEL_ID)
