"""``protocol.uplink``: a client's Opus sent as Chrome sends it (RED when negotiated).

Pure layer: an ``UplinkStream`` with its target's I/O given as plain functions,
its packets parsed back with aiortc's ``RtpPacket.parse`` and
``protocol.red.parse_red``. The real path (``take_sending`` on a client's sender,
RED to a ``MediaRoom`` over a lossy relay, lost frames rebuilt there) is
``tests/test_voice_networks.py::test_a_chrome_like_talker_sends_red_up_...``.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from protocol.aiortc_compat import SendTarget
from protocol.red import RedBlock, parse_red
from protocol.uplink import CHROME_RED_DISTANCE, IdleTrack, UplinkStream

OPUS_PT, RED_PT = 111, 63
SSRC = 0x1234ABCD


def _target(sent: list[bytes], *, red: bool) -> SendTarget:
    codecs = ((OPUS_PT, "audio/opus"),) + (((RED_PT, "audio/red"),) if red else ())
    return SendTarget(ssrc=SSRC, codecs=codecs, header_extensions=b"", protect=bytes,
                      send=sent.append)


def test_chrome_sends_one_earlier_frame() -> None:
    assert CHROME_RED_DISTANCE == 1


def test_red_when_the_answer_accepts_it_with_one_earlier_frame() -> None:
    sent: list[bytes] = []
    stream = UplinkStream(first_sequence=65_534, first_timestamp=2**32 - 960,
                          clock=lambda: 5.0)
    stream.send(b"\x78early", 0)  # before the transport is up: dropped
    stream.start(_target(sent, red=True))
    assert stream.red
    frames = [b"\x78aaa", b"\x78bbb", b"\x78ccc"]
    for i, f in enumerate(frames, start=1):
        stream.send(f, i * 960)
    packets = [RtpPacket.parse(p) for p in sent]
    assert [p.sequence_number for p in packets] == [65_534, 65_535, 0]  # wraps
    assert [p.timestamp for p in packets] == [0, 960, 1920]  # origin + pts, wrapped
    assert {(p.payload_type, p.ssrc, p.marker) for p in packets} == {(RED_PT, SSRC, 1)}
    reds = [parse_red(p.payload) for p in packets]
    assert reds[0].redundant == () and reds[0].primary == b"\x78aaa"
    assert reds[2].redundant == (RedBlock(OPUS_PT, 960, b"\x78bbb"),)
    assert reds[2].primary == b"\x78ccc"
    assert stream.red_sent == 3
    c = stream.counters
    assert (c.packet_count, c.octet_count, c.rtp_timestamp, c.sent_at) == (
        3, sum(len(p.payload) for p in packets), 1920, 5.0)


def test_plain_opus_when_the_answer_has_no_red() -> None:
    """Janus AudioBridge's answer: no RED, so Chrome (and this) send plain Opus."""
    sent: list[bytes] = []
    stream = UplinkStream(first_sequence=7, first_timestamp=0)
    stream.start(_target(sent, red=False))
    assert not stream.red
    stream.send(b"\x78a", 0)
    stream.send(b"\x78b", 960 * 21)  # after a DTX pause: the timestamp jumps, not the seq
    packets = [RtpPacket.parse(p) for p in sent]
    assert [(p.payload_type, p.sequence_number, p.timestamp, p.payload) for p in packets] == [
        (OPUS_PT, 7, 0, b"\x78a"), (OPUS_PT, 8, 960 * 21, b"\x78b")]
    stream.stop()
    stream.send(b"\x78c", 960 * 22)
    assert len(sent) == 2


def test_no_red_when_asked_for_none_and_bad_distance() -> None:
    sent: list[bytes] = []
    stream = UplinkStream(red_distance=0)
    stream.start(_target(sent, red=True))
    stream.send(b"\x78a", 0)
    assert not stream.red and RtpPacket.parse(sent[0]).payload_type == OPUS_PT
    with pytest.raises(ValueError, match="red_distance"):
        UplinkStream(red_distance=-1)


def test_nothing_sent_without_opus() -> None:
    sent: list[bytes] = []
    stream = UplinkStream()
    stream.start(SendTarget(ssrc=1, codecs=((0, "audio/pcmu"),), header_extensions=b"",
                            protect=bytes, send=sent.append))
    stream.send(b"\x78a", 0)
    assert sent == [] and stream.target is None


async def test_idle_track_never_yields_and_ends_when_stopped() -> None:
    track = IdleTrack()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.05)
    assert not pending.done()
    track.stop()
    with pytest.raises(MediaStreamError):
        await pending
