"""``protocol.aiortc_compat.send`` still takes on the installed aiortc: the far end's
receiver reports reach a callback, pre-encoded packets carry a level, and
``take_sending`` hands over what it takes to send RTP without aiortc's sender loop
(directly and through a TURN relay), its sender reports reading our counters.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from aiortc import RTCConfiguration, RTCIceTransportPolicy, RTCPeerConnection
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

from protocol import aiortc_compat
from protocol.aiortc_compat import CompatError
from signaling.turn import turn_credentials
from tests.aiortc_compat_support import (
    ARRIVAL_TIMEOUT_S,
    PacketTrack,
    _installed,  # noqa: F401 (an autouse fixture)
    _report_sink,
    connect_taking_rtp,
    loopback_pair,
)
from tests.rtc_helpers import coturn, loopback_ice
from tests.services import require_binary

# --- per sender: receiver reports, audio levels -----------------------------------------


async def test_receiver_reports_about_our_stream_reach_the_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver, track = loopback_pair(monkeypatch)
    reports, got, sink = _report_sink()
    try:
        rtp_sender = sender.addTrack(track)
        aiortc_compat.watch_receiver_reports(rtp_sender, sink)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        for i in range(200):  # packets until the receiver reports on them (every ~1 s)
            track.queue.put_nowait(bytes([0xF8, i % 256]))
            if i % 10 == 0 and got.is_set():
                break
            await asyncio.sleep(0.02)
        assert reports, "no receiver report in 4 s"
        assert reports[0].fraction_lost == 0 and 0 <= reports[0].jitter_s < 0.1
        stats = await rtp_sender.getStats()  # aiortc still keeps its own view too
        assert any(s.type == "remote-inbound-rtp" for s in stats.values())
    finally:
        await sender.close()
        await receiver.close()


async def test_send_audio_level_puts_a_level_in_pre_encoded_packets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver, track = loopback_pair(monkeypatch)
    got: list[int | None] = []
    arrived = asyncio.Event()
    level: list[int | None] = [-33]

    def sink(packet: aiortc_compat.InboundRtp, mime: str) -> None:
        got.append(packet.audio_level)
        arrived.set()

    try:
        aiortc_compat.send_audio_level(sender.addTrack(track), lambda: level[0])
        await connect_taking_rtp(sender, receiver, sink)
        for value in (-33, -200, None):  # as given, clamped to RFC 6464's floor, none
            level[0] = value
            arrived.clear()
            track.queue.put_nowait(b"\xf8x")
            await asyncio.wait_for(arrived.wait(), ARRIVAL_TIMEOUT_S)
        assert got == [33, 127, None]
    finally:
        await sender.close()
        await receiver.close()
    with pytest.raises(CompatError, match="_next_encoded_frame"):
        aiortc_compat.send_audio_level(SimpleNamespace(), lambda: 0)  # type: ignore[arg-type]


def test_watching_reports_refuses_a_sender_without_the_parts_it_wraps() -> None:
    with pytest.raises(CompatError, match="_handle_rtcp_packet"):
        aiortc_compat.watch_receiver_reports(SimpleNamespace(), lambda r: None)  # type: ignore[arg-type]


# --- send path: take_sending --------------------------------------------------------------


async def test_take_sending_hands_over_srtp_and_the_socket_and_reports_read_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver, track = loopback_pair(monkeypatch)
    targets: list[aiortc_compat.SendTarget] = []
    got: list[tuple[aiortc_compat.InboundRtp, str]] = []
    counters = aiortc_compat.SendCounters()
    try:
        rtp_sender = sender.addTrack(track)  # a track that never yields: aiortc sends nothing
        aiortc_compat.take_sending(rtp_sender, counters, targets.append)
        assert isinstance(rtp_sender, RTCRtpSender)
        transceiver = await connect_taking_rtp(sender, receiver, lambda p, m: got.append((p, m)))
        for _ in range(100):
            if targets:
                break
            await asyncio.sleep(0.05)
        (target,) = targets
        assert target.ssrc == rtp_sender._ssrc
        opus = target.payload_type("audio/opus")
        assert opus is not None and target.codecs[0] == (opus, "audio/opus")
        assert target.payload_type("audio/red") is not None  # aiortc offers RED once installed
        # a packet we build ourselves, protected and sent through the target, arrives
        packet = RtpPacket(payload_type=opus, sequence_number=100, timestamp=9600,
                           ssrc=target.ssrc, payload=b"\xf8ours")
        plain = packet.serialize()
        protected = target.protect(plain)
        assert len(protected) > len(plain) and protected[12:] != plain[12:]  # encrypted + tag
        target.send(protected)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got and got[0][0].payload == b"\xf8ours" and got[0][0].sequence_number == 100
        # aiortc's sender reports read the counters
        counters.packet_count, counters.octet_count = 7, 1234
        counters.rtp_timestamp, counters.sent_at = 9600, 1_800_000_000.25
        seen = None
        for _ in range(90):  # an SR every 2.5-7.5 s (rtcp.AUDIO_RTCP_INTERVAL_S)
            stats = await transceiver.receiver.getStats()
            seen = next(((int(s.packetsSent), int(s.bytesSent)) for s in stats.values()
                         if s.type == "remote-outbound-rtp"), None)
            if seen == (7, 1234):
                break
            await asyncio.sleep(0.1)
        assert seen == (7, 1234)
    finally:
        await sender.close()
        await receiver.close()


def test_take_sending_refuses_a_sender_whose_reports_do_not_read_those_counters() -> None:
    class Changed:
        async def _run_rtcp(self) -> None:
            return None

        async def _run_rtp(self) -> None:
            return None

        async def send(self, parameters: object) -> None:
            return None

    with pytest.raises(CompatError, match="RTCP loop"):
        aiortc_compat.check_sender_class(Changed)
    with pytest.raises(CompatError, match="RTCP loop"):
        aiortc_compat.take_sending(Changed(), aiortc_compat.SendCounters(),  # type: ignore[arg-type]
                                   lambda t: None)
    with pytest.raises(CompatError, match="_rx_srtp"):
        aiortc_compat.tap_plaintext_rtp(SimpleNamespace(), lambda b: None)  # type: ignore[arg-type]


@pytest.mark.coturn
async def test_take_sending_through_a_turn_relay_sends_via_aioice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sender whose nominated pair is relayed: the target sends through aioice's TURN
    client (its coroutine), and the packet still arrives."""
    binary = require_binary("turnserver", "coturn")
    loopback_ice(monkeypatch)
    async with coturn(binary) as turn:
        username, credential = turn_credentials(turn.secret, "relayed", time.time(), 600)
        sender = RTCPeerConnection(RTCConfiguration(
            iceServers=[turn.ice_server(username, credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY))
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        targets: list[aiortc_compat.SendTarget] = []
        got: list[aiortc_compat.InboundRtp] = []
        try:
            rtp_sender = sender.addTrack(PacketTrack())
            aiortc_compat.take_sending(rtp_sender, aiortc_compat.SendCounters(), targets.append)
            await connect_taking_rtp(sender, receiver, lambda p, m: got.append(p))
            for _ in range(200):
                if targets:
                    break
                await asyncio.sleep(0.05)
            (target,) = targets
            ice = rtp_sender.transport.transport
            local = aiortc_compat.nominated_local_candidate(ice)
            assert local is not None and local.type == "relay"
            opus = target.payload_type("audio/opus")
            assert opus is not None
            for seq in range(3):
                packet = RtpPacket(payload_type=opus, sequence_number=seq, timestamp=960 * seq,
                                   ssrc=target.ssrc, payload=bytes([0xF8, seq]))
                target.send(target.protect(packet.serialize()))
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.02)
            assert [p.payload for p in got] == [bytes([0xF8, s]) for s in range(3)]
        finally:
            await sender.close()
            await receiver.close()
