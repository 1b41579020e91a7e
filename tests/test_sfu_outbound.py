"""``sfu.outbound``: the fast send path's RTP, checked against aiortc's own.

Pure layer: ``rtp_header`` byte for byte against aiortc's ``RtpPacket.serialize``
(table), and an ``OutboundStream``'s numbering, counters and RED choice with
its target's I/O given as plain functions. Real layer: a ``sfu.peer.Peer`` on
the fast path and one on aiortc's path, each answered for a real aiortc
client on 127.0.0.1, fed the same Opus payloads; the clients decrypt the SRTP
and the plaintext RTP is compared; the clients' view of our RTCP sender
reports is read from their stats.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from protocol import aiortc_compat
from protocol.opus import Encoder
from protocol.red import parse_red
from sfu.fec_policy import RED_OFF_HOLD_S
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ
from sfu.outbound import RED_DISTANCE, OutboundStream, rtp_header
from sfu.peer import Peer
from sfu.room import MediaConfig, MediaPeer, MediaRoom, PeerStateCallback, aiortc_peers
from tests.rtc_helpers import (
    RtcClient,
    assert_mix_minus,
    eventually,
    join,
    loopback_ice,
    record_for,
)

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
OPUS_PT, RED_PT = 111, 63


def aiortc_bytes(pt: int, seq: int, ts: int, ssrc: int, mid: str | None,
                 ext_ids: dict[str, int], payload: bytes) -> bytes:
    """What aiortc's ``RTCRtpSender._run_rtp`` serializes for one pre-encoded frame."""
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ext_ids.items()])
    extensions = HeaderExtensionsMap()
    extensions.configure(params)
    packet = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts)
    packet.ssrc, packet.payload, packet.marker = ssrc, payload, 1
    packet.extensions.mid = mid
    packet.extensions.abs_send_time = 12345  # aiortc sets it; audio never negotiates it
    return packet.serialize(extensions)


@pytest.mark.parametrize(("pt", "seq", "ts", "ssrc", "mid", "ext_ids"), [
    (111, 0, 0, 1, "0", {MID: 1}),
    (111, 65535, 2**32 - 1, 2**32 - 1, "0", {MID: 1, LEVEL: 2}),
    (96, 1234, 960 * 7, 0xDEADBEEF, "audio-main", {MID: 4}),
    (63, 32767, 123456789, 42, "1", {MID: 14}),
    (111, 5, 960, 7, None, {}),
    (111, 5, 960, 7, "0", {}),  # mid not negotiated: no extension
    (0, 9, 9, 9, "0", {MID: 1}),
])
def test_the_header_is_aiortcs_byte_for_byte(pt: int, seq: int, ts: int, ssrc: int,
                                             mid: str | None, ext_ids: dict[str, int]) -> None:
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ext_ids.items()])
    block = aiortc_compat.header_extension_block(params, mid)
    payload = bytes(range(7)) * 9
    assert (rtp_header(pt, seq, ts, ssrc, block) + payload
            == aiortc_bytes(pt, seq, ts, ssrc, mid, ext_ids, payload))


# --- OutboundStream with a target of plain functions ---------------------------------------


class Wire:
    """A target whose ``protect`` is the identity and whose ``send`` keeps the packet."""

    def __init__(self, codecs: tuple[tuple[int, str], ...]) -> None:
        self.packets: list[bytes] = []
        self.target = aiortc_compat.SendTarget(
            ssrc=0x01020304, codecs=codecs, header_extensions=b"\xbe\xde\x00\x01\x10\x30\x00\x00",
            protect=bytes, send=self.packets.append)


def parsed(packets: list[bytes]) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in packets]


def test_frames_before_the_transport_only_advance_time_then_numbering_runs_on() -> None:
    stream = OutboundStream(first_sequence=65534, first_timestamp=2**32 - 960,
                            clock=lambda: 1_000_000.5)
    stream.send(b"early")  # DTLS not up: not sent, but 20 ms passed
    stream.skip(2)  # the room's clock skipped two ticks
    wire = Wire(((OPUS_PT, "audio/opus"), (RED_PT, "audio/red")))
    stream.start(wire.target)
    for k in range(4):
        stream.send(bytes([k]) * 10)
    got = parsed(wire.packets)
    assert [p.sequence_number for p in got] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in got] == [(2**32 - 960 + 960 * k) % 2**32 for k in (3, 4, 5, 6)]
    assert {p.payload_type for p in got} == {OPUS_PT} and {p.marker for p in got} == {1}
    assert {p.ssrc for p in got} == {0x01020304}
    c = stream.counters
    assert (c.packet_count, c.octet_count, c.rtp_timestamp) == (4, 40, got[-1].timestamp)
    assert c.ntp_timestamp >> 32 == 1_000_000 + aiortc_compat.NTP_UNIX_OFFSET_S
    assert c.ntp_timestamp & 0xFFFFFFFF == 1 << 31  # .5 s
    stream.stop()
    stream.send(b"late")
    assert len(wire.packets) == 4


@pytest.mark.parametrize(("reports", "red_on"), [
    ([0, 0], False),
    ([8], False),  # 3 %: not yet
    ([13], True),  # 5 %
    ([26, 0], True),  # one clean report does not switch it off (hysteresis)
])
def test_red_follows_the_listeners_loss(reports: list[int], red_on: bool) -> None:
    stream = OutboundStream()
    stream.start(Wire(((OPUS_PT, "audio/opus"), (RED_PT, "audio/red"))).target)
    for k, fraction in enumerate(reports):
        stream.follow_loss(fraction, float(k))
    assert stream.red_on is red_on


def test_red_goes_off_after_a_quiet_hold_and_never_without_an_offer() -> None:
    stream = OutboundStream()
    stream.start(Wire(((OPUS_PT, "audio/opus"), (RED_PT, "audio/red"))).target)
    assert stream.follow_loss(40, 0.0)
    assert stream.follow_loss(0, 1.0)
    assert not stream.follow_loss(0, 1.0 + RED_OFF_HOLD_S)
    opus_only = OutboundStream()
    opus_only.start(Wire(((OPUS_PT, "audio/opus"),)).target)
    assert not opus_only.follow_loss(255, 0.0) and not opus_only.red_offered


def test_red_packets_carry_the_frames_before_them_under_the_red_payload_type() -> None:
    stream = OutboundStream(first_timestamp=0)
    wire = Wire(((RED_PT, "audio/red"), (OPUS_PT, "audio/opus")))  # RED listed first
    stream.start(wire.target)
    stream.send(b"plain-0")
    stream.follow_loss(64, 0.0)  # 25 % loss: RED on from the next packet
    frames = [f"frame-{k}".encode() for k in range(1, 5)]
    for f in frames:
        stream.send(f)
    got = parsed(wire.packets)
    assert got[0].payload_type == OPUS_PT and got[0].payload == b"plain-0"
    assert {p.payload_type for p in got[1:]} == {RED_PT} and stream.red_sent == 4
    last = parse_red(got[-1].payload)
    assert last.primary == frames[-1] and last.primary_pt == OPUS_PT
    assert [b.payload for b in last.redundant] == frames[-1 - RED_DISTANCE:-1]
    assert [b.ts_offset for b in last.redundant] == [960 * RED_DISTANCE, 960]
    assert stream.counters.octet_count == sum(len(p.payload) for p in got)


# --- real peers: the fast path against aiortc's on the wire ------------------------------


class Link:
    """A server ``Peer`` answered for a recv-only aiortc client; the client's plaintext RTP."""

    def __init__(self, fast: bool) -> None:
        self.peer = Peer("listener", on_state=lambda p, s: None, fast_send=fast)
        self.client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.client.addTransceiver("audio", direction="recvonly")
        self.plain: list[bytes] = []

    async def connect(self) -> None:
        await self.client.setLocalDescription(await self.client.createOffer())
        answer = await self.peer.answer(self.client.localDescription.sdp)
        await self.client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await eventually(lambda: self.peer.state == "connected"
                         and self.client.connectionState == "connected", 10.0, "connected")
        (transceiver,) = self.client.getTransceivers()
        aiortc_compat.tap_plaintext_rtp(transceiver.receiver.transport, self.plain.append)
        if self.peer.outbound is not None:
            await eventually(lambda: self.peer.outbound is not None
                             and self.peer.outbound.ready, 5.0, "fast path ready")

    async def close(self) -> None:
        await self.client.close()
        await self.peer.close()


@pytest.fixture
async def links(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Link, Link]]:
    loopback_ice(monkeypatch)
    fast, slow = Link(fast=True), Link(fast=False)
    await asyncio.gather(fast.connect(), slow.connect())
    yield fast, slow
    await fast.close()
    await slow.close()


def tone_payloads(count: int) -> list[bytes]:
    encoder = Encoder(32_000)
    n = np.arange(count * FRAME_SAMPLES)
    pcm = (np.sin(2 * np.pi * 440 * n / SAMPLE_RATE_HZ) * 8000).astype(np.int16)
    return [encoder.encode(pcm[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]) for k in range(count)]


async def test_fast_and_aiortc_paths_put_the_same_rtp_in_valid_srtp(
        links: tuple[Link, Link]) -> None:
    fast, slow = links
    payloads = tone_payloads(30)
    for payload in payloads:  # paced like the room's clock: aiortc's track holds 3
        fast.peer.send(payload)
        slow.peer.send(payload)
        await asyncio.sleep(0.02)
    await eventually(lambda: len(fast.plain) >= 30 and len(slow.plain) >= 30, 5.0,
                     "every packet decrypted by both clients")
    assert len(fast.plain) == len(slow.plain) == 30
    for link in (fast, slow):
        got = parsed(link.plain)
        assert [p.payload for p in got] == payloads
        first = got[0]
        assert [p.sequence_number for p in got] == [
            (first.sequence_number + k) % 65536 for k in range(30)]
        assert [p.timestamp for p in got] == [(first.timestamp + 960 * k) % 2**32
                                              for k in range(30)]
    for a, b in zip(fast.plain, slow.plain, strict=True):
        assert a[:2] == b[:2]  # version, extension bit, marker, payload type
        assert a[12:] == b[12:]  # header extensions (mid) and payload, byte for byte
    # and the SRTP the fast path protected is what an aiortc receiver accepts and decodes
    (receiver,) = [t.receiver for t in fast.client.getTransceivers()]
    assert receiver.track is not None


async def test_sender_reports_count_what_the_fast_path_sent(links: tuple[Link, Link]) -> None:
    fast, _ = links
    payloads = tone_payloads(20)
    for payload in payloads:
        fast.peer.send(payload)
        await asyncio.sleep(0.02)
    (receiver,) = [t.receiver for t in fast.client.getTransceivers()]

    async def remote_outbound() -> tuple[int, int] | None:
        stats = await receiver.getStats()
        for s in stats.values():
            if s.type == "remote-outbound-rtp":
                return int(s.packetsSent), int(s.bytesSent)
        return None

    seen: list[tuple[int, int] | None] = [None]

    async def poll() -> None:
        for _ in range(100):  # the server's SR: every 2.5-7.5 s (rtcp.AUDIO_RTCP_INTERVAL_S)
            seen[0] = await remote_outbound()
            if seen[0] == (20, sum(map(len, payloads))):
                return
            await asyncio.sleep(0.1)

    await poll()
    assert seen[0] == (20, sum(map(len, payloads)))


@pytest.mark.parametrize("polled", [True, False], ids=["polled-sockets", "loop-read-sockets"])
async def test_a_room_on_the_fast_path_is_heard_mix_minus(
        monkeypatch: pytest.MonkeyPatch, polled: bool) -> None:
    """aiortc clients decode what the fast path protected and hear the right tones (FFT),
    with the peers' sockets read at the tick (``aiortc_compat.polled``) or by the loop."""
    loopback_ice(monkeypatch)
    tones = {"a": 440.0, "b": 660.0, "c": 990.0}
    config = MediaConfig(peer_timeout_s=2.0, fast_send=True, polled_receive=polled)
    made: dict[str, Peer] = {}
    production = aiortc_peers(config)

    def factory(pid: str, mids: Collection[str], on_state: PeerStateCallback) -> MediaPeer:
        peer = made[pid] = production(pid, mids, on_state)  # type: ignore[assignment]
        return peer

    room = MediaRoom("g-fast", config, lambda e: None, peer_factory=factory)
    await room.start()
    clients = {name: RtcClient(name, hz) for name, hz in tones.items()}
    try:
        await asyncio.gather(*(join(room, c) for c in clients.values()))
        await asyncio.sleep(0.8)
        await record_for([c.recorder for c in clients.values()], 1.0)
        assert_mix_minus(clients, tones, 1.0)
        for name in tones:
            outbound = made[name].outbound
            assert outbound is not None and outbound.ready and outbound.target is not None
            assert outbound.counters.packet_count >= 50 and outbound.red_sent == 0
            assert outbound.target.polled is polled
            assert made[name].voice.packets_in >= 50
    finally:
        for c in clients.values():
            await c.close()
        await room.close()
