"""``protocol.aiortc_compat.receive`` still takes on the installed aiortc/aioice: the
RTP demux over a real UDP socket, and ``take_rtp`` handing a real aiortc receiver's
packets over on arrival (a single packet, which aiortc's own jitter buffer would hold
until four more came), then on the fast path, identical for the sink.
"""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import aioice
import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RtpPacket

from protocol import aiortc_compat
from protocol.aiortc_compat import CompatError
from tests.aiortc_compat_support import (
    ARRIVAL_TIMEOUT_S,
    _installed,  # noqa: F401 (an autouse fixture)
    _report_sink,
    connect_taking_rtp,
    loopback_pair,
)
from tests.rtc_helpers import ToneTrack

# --- the RTP demux in front of aioice's STUN parse -------------------------------------


async def test_rtp_skips_the_stun_parse_and_stun_still_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over a real UDP socket: an RTP or RTCP datagram reaches the connection without
    ``stun.parse_message``; a STUN binding request still goes aioice's way (parsed,
    handed to ``request_received``); a datagram that is neither (DTLS) is handed on
    after aioice's parse fails, as before."""
    parsed: list[bytes] = []
    real_parse = aioice.stun.parse_message

    def counting_parse(data: bytes, *args: Any, **kwargs: Any) -> Any:
        parsed.append(bytes(data))
        return real_parse(data, *args, **kwargs)

    monkeypatch.setattr(aioice.stun, "parse_message", counting_parse)
    handed: list[tuple[bytes, int]] = []
    requests: list[Any] = []
    all_in = asyncio.Event()

    class Receiver:
        def data_received(self, data: bytes, component: int) -> None:
            handed.append((data, component))
            self._check()

        def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
            requests.append(message)
            self._check()

        def _check(self) -> None:
            if len(handed) == 3 and requests:
                all_in.set()

    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: aioice.ice.StunProtocol(Receiver()), local_addr=("127.0.0.1", 0))
    protocol.local_candidate = SimpleNamespace(component=1)
    sender, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=transport.get_extra_info("sockname"))
    rtp = bytes([0x90, 111, 0, 5]) + bytes(8) + b"opus"
    rtcp = bytes([0x81, 201, 0, 1]) + bytes(4)
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(10)
    stun = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    try:
        for datagram in (rtp, rtcp, dtls, bytes(stun)):
            sender.sendto(datagram)
        await asyncio.wait_for(all_in.wait(), ARRIVAL_TIMEOUT_S)
    finally:
        sender.close()
        transport.close()
    assert handed == [(rtp, 1), (rtcp, 1), (dtls, 1)]
    assert [m.transaction_id for m in requests] == [stun.transaction_id]
    assert parsed == [dtls, bytes(stun)]  # RTP and RTCP were never parsed as STUN


# --- patch 2: the RTP tap ----------------------------------------------------------------


async def test_take_rtp_hands_over_each_packet_on_arrival(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver, track = loopback_pair(monkeypatch)
    got: list[tuple[bytes, str]] = []
    headers: list[tuple[int, int]] = []
    arrived = asyncio.Event()
    decoded: list[Any] = []

    def sink(packet: aiortc_compat.InboundRtp, mime: str) -> None:
        got.append((packet.payload, mime))
        headers.append((packet.sequence_number, packet.timestamp))
        arrived.set()

    receiver.on("track", lambda t: decoded.append(asyncio.ensure_future(t.recv())))
    try:
        sender.addTrack(track)
        await connect_taking_rtp(sender, receiver, sink)

        # one packet and nothing after it: aiortc's buffer (prefetch 4) would sit on it
        track.queue.put_nowait(b"\xf8first")
        await asyncio.wait_for(arrived.wait(), ARRIVAL_TIMEOUT_S)
        assert got == [(b"\xf8first", "audio/opus")]
        for i in range(5):
            track.queue.put_nowait(bytes([0xF8, i]))
        while len(got) < 6:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), ARRIVAL_TIMEOUT_S)
        assert [p for p, _ in got[1:]] == [bytes([0xF8, i]) for i in range(5)]
        # each with its RTP sequence number and timestamp (960 a 20 ms packet, wrapping)
        for (seq0, ts0), (seq1, ts1) in itertools.pairwise(headers):
            assert (seq1 - seq0) % 65_536 == 1 and (ts1 - ts0) % (1 << 32) == 960
        await asyncio.sleep(0.1)
        assert decoded and not decoded[0].done()  # aiortc's decoder got nothing

        # the two reads for tests: the path ICE chose, and vanishing without a goodbye
        sender_ice = sender.getTransceivers()[0].receiver.transport.transport
        local = aiortc_compat.nominated_local_candidate(sender_ice)
        assert local is not None and (local.type, local.host) == ("host", "127.0.0.1")
        aiortc_compat.go_silent(sender_ice)
        track.queue.put_nowait(b"\xf8after")
        await asyncio.sleep(0.3)
        assert len(got) == 6  # nothing more arrives
    finally:
        for future in decoded:
            future.cancel()
        await sender.close()
        await receiver.close()


async def test_take_rtp_hands_over_the_rfc6464_level_an_encoding_sender_adds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc negotiates ssrc-audio-level and, encoding itself, sends the level: the tap
    hands it over per packet (a tone at 1/4 of full scale is about -15 dBov)."""
    sender, receiver, _ = loopback_pair(monkeypatch)
    levels: list[int | None] = []
    enough = asyncio.Event()

    def sink(packet: aiortc_compat.InboundRtp, mime: str) -> None:
        levels.append(packet.audio_level)
        if len(levels) >= 25:
            enough.set()

    tone = ToneTrack(440.0, amplitude=0.25)
    try:
        sender.addTrack(tone)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        (transceiver,) = receiver.getTransceivers()
        aiortc_compat.take_rtp(transceiver.receiver, sink)
        await receiver.setLocalDescription(await receiver.createAnswer())
        assert "urn:ietf:params:rtp-hdrext:ssrc-audio-level" in receiver.localDescription.sdp
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(enough.wait(), 5 * ARRIVAL_TIMEOUT_S)
        assert all(level is not None and 13 <= level <= 17 for level in levels[5:]), levels
        tone.frequency_hz = None  # digital silence: RFC 6464's floor
        levels.clear()
        enough.clear()
        await asyncio.wait_for(enough.wait(), 5 * ARRIVAL_TIMEOUT_S)
        assert levels[-1] == 127
    finally:
        tone.stop()
        await sender.close()
        await receiver.close()


async def _send_through(monkeypatch: pytest.MonkeyPatch, count: int,
                        counters: aiortc_compat.CountersSource | None,
                        ) -> tuple[list[aiortc_compat.InboundRtp], int]:
    """``count`` packets (payload and level vary) over a loopback pair; what the sink got,
    and how many took the fast path."""
    sender, receiver, track = loopback_pair(monkeypatch)
    got: list[aiortc_compat.InboundRtp] = []
    arrived = asyncio.Event()
    level = [0]

    def sink(packet: aiortc_compat.InboundRtp, mime: str) -> None:
        assert mime == "audio/opus"
        got.append(packet)
        arrived.set()

    try:
        aiortc_compat.send_audio_level(sender.addTrack(track), lambda: -level[0])
        transceiver = await connect_taking_rtp(sender, receiver, sink, counters)
        for i in range(count):
            level[0] = (i * 7) % 128
            arrived.clear()
            track.queue.put_nowait(bytes([0xF8, i]) * (1 + i % 5))
            await asyncio.wait_for(arrived.wait(), ARRIVAL_TIMEOUT_S)
        return got, aiortc_compat.fast_path_packets(transceiver.receiver)
    finally:
        await sender.close()
        await receiver.close()


def _relative(packets: list[aiortc_compat.InboundRtp]) -> list[tuple[Any, ...]]:
    seq0, ts0 = packets[0].sequence_number, packets[0].timestamp
    return [((p.sequence_number - seq0) % 65_536, (p.timestamp - ts0) % (1 << 32),
             p.payload_type, p.payload, p.audio_level) for p in packets]


def _fixed_counters() -> aiortc_compat.ReceiveCounters:
    return aiortc_compat.ReceiveCounters(received=75, expected=100, lost=25,
                                         highest_seq=70_000, jitter_s=0.01)


async def test_the_fast_path_hands_the_sink_what_aiortc_hands_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same packets through aiortc's receive path and through the fast path (SRTP
    from aioice's datagram, unprotected and parsed here): identical for the sink."""
    slow, slow_fast = await _send_through(monkeypatch, 30, None)
    fast, fast_fast = await _send_through(monkeypatch, 30, _fixed_counters)
    assert slow_fast == 0 and fast_fast == 29  # all but the first, which routes the SSRC
    assert _relative(fast) == _relative(slow)
    assert [p.audio_level for p in fast[:3]] == [0, 7, 14]


async def test_receiver_reports_come_from_the_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver, track = loopback_pair(monkeypatch)
    reports, got, sink = _report_sink()
    try:
        aiortc_compat.watch_receiver_reports(sender.addTrack(track), sink)
        transceiver = await connect_taking_rtp(sender, receiver, lambda p, m: None, _fixed_counters)
        for i in range(500):  # packets until the receiver reports (every 2.5-7.5 s: paced)
            track.queue.put_nowait(bytes([0xF8, i % 256]))
            if i % 10 == 0 and got.is_set():
                break
            await asyncio.sleep(0.02)
        assert reports, "no receiver report in 10 s"
        # 25 of 100 lost -> 64/256; 10 ms of jitter; not what the clean loopback saw
        assert reports[0].fraction_lost == 64 and reports[0].jitter_s == pytest.approx(0.01)
        stats = await transceiver.receiver.getStats()
        inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
        assert inbound and (inbound[0].packetsReceived, inbound[0].packetsLost) == (75, 25)
    finally:
        await sender.close()
        await receiver.close()


def test_counter_stats_report_the_loss_since_the_previous_report() -> None:
    values = iter([(100, 0), (200, 10), (200, 10), (300, 110)])

    def source() -> aiortc_compat.ReceiveCounters:
        expected, lost = next(values)
        return aiortc_compat.ReceiveCounters(expected - lost, expected, lost, 5, 0.0)

    stats = aiortc_compat.receive._CounterStats(source, 48_000)
    assert [stats.fraction_lost for _ in range(4)] == [0, 25, 0, 255]  # 10/100, 100/100 capped


def test_the_tap_hands_the_sink_sequence_number_timestamp_and_payload_type() -> None:
    got: list[tuple[aiortc_compat.InboundRtp, str]] = []
    tap = aiortc_compat.receive._Tap(  # the buffer take_rtp installs, without a connection
        {111: SimpleNamespace(mimeType="audio/OPUS"), 63: SimpleNamespace(mimeType="audio/red")},
        lambda rtp, mime: got.append((rtp, mime)),
    )
    for pt, seq, ts in ((111, 65_535, 4_294_966_336), (63, 0, 960), (9, 1, 1920)):
        packet = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts,
                           payload=bytes([pt]))
        if pt == 111:
            packet.extensions.audio_level = (True, 30)  # RFC 6464: voice, -30 dBov
        assert tap.add(packet) == (False, None)
    assert got == [
        (aiortc_compat.InboundRtp(65_535, 4_294_966_336, 111, b"\x6f", 30), "audio/opus"),
        (aiortc_compat.InboundRtp(0, 960, 63, b"\x3f"), "audio/red"),
        (aiortc_compat.InboundRtp(1, 1920, 9, b"\x09"), ""),  # a codec it does not know
    ]


async def test_take_rtp_refuses_a_receiver_without_the_parts_it_replaces() -> None:
    with pytest.raises(CompatError, match="JitterBuffer"):
        aiortc_compat.take_rtp(SimpleNamespace(), lambda p, m: None)  # type: ignore[arg-type]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("audio").receiver
        buffer_key = next(k for k in vars(receiver) if k.endswith("jitter_buffer"))
        setattr(receiver, buffer_key, object())  # right name, wrong type
        with pytest.raises(CompatError, match="found object"):
            aiortc_compat.take_rtp(receiver, lambda p, m: None)
    finally:
        await pc.close()
