"""``protocol.aiortc_compat.rtcp`` still takes on the installed aiortc: on the fast path
the far end's RTCP is read here, and what aiortc kept from it (the LSR its receiver
reports echo, its senders' RTT) is still kept, both ways, between real peers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpRrPacket, RtcpSrPacket

from protocol import aiortc_compat
from tests.aiortc_compat_support import (
    PacketTrack,
    _installed,  # noqa: F401 (an autouse fixture)
    _report_sink,
    loopback_pair,
)

REPORTS_TIMEOUT_S = 12.0
"""An RTT needs a sender report, then a receiver report that echoes it, each way:
the client reports every 0.5-1.5 s (aiortc's own loops), the server's paced receiver
every 2.5-7.5 s."""
WINDOW_S = 2.4
"""Shorter than the shortest paced wait (0.5 x 5 s): the server sends no report in it,
while the client's unpaced loop sends at least one (its longest wait, 1.5 s)."""


def _counters() -> aiortc_compat.ReceiveCounters:
    return aiortc_compat.ReceiveCounters(received=90, expected=100, lost=10,
                                         highest_seq=5_000, jitter_s=0.002)


async def _server_and_client(monkeypatch: pytest.MonkeyPatch) -> tuple[
        RTCPeerConnection, RTCPeerConnection, PacketTrack, PacketTrack, Any]:
    """A client that offers sendrecv audio; a server that answers with the fast path
    (``take_rtp`` with counters) and its own track. Returns the server's transceiver."""
    client, server, client_track = loopback_pair(monkeypatch)
    server_track = PacketTrack()
    client.addTrack(client_track)
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    (transceiver,) = server.getTransceivers()
    transceiver.sender.replaceTrack(server_track)
    transceiver.direction = "sendrecv"
    aiortc_compat.take_rtp(transceiver.receiver, lambda p, m: None, _counters)
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    return client, server, client_track, server_track, transceiver


async def _until_the_fast_path(track: PacketTrack, transceiver: Any) -> None:
    """Send until the server reads the client's media on the fast path (DTLS is up)."""
    for _ in range(100):
        track.queue.put_nowait(b"\xf8\x01")
        await asyncio.sleep(0.02)
        if aiortc_compat.fast_path_packets(transceiver.receiver) > 0:
            return


def _observe_rtcp(monkeypatch: pytest.MonkeyPatch, dtls: Any,
                  seen: Callable[[bytes], None]) -> None:
    """Show ``seen`` every plaintext RTCP packet that reaches aiortc's handler on ``dtls``
    (which still handles it)."""
    original = dtls._handle_rtcp_data

    async def observed(data: bytes) -> None:
        seen(data)
        await original(data)

    monkeypatch.setattr(dtls, "_handle_rtcp_data", observed)


async def test_reports_rtt_and_lsr_survive_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, server, client_track, server_track, transceiver = await _server_and_client(
        monkeypatch)
    reports, _, sink = _report_sink()
    aiortc_compat.watch_receiver_reports(transceiver.sender, sink)
    client_sender = client.getSenders()[0]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPORTS_TIMEOUT_S
        while loop.time() < deadline:
            client_track.queue.put_nowait(b"\xf8\x01")
            server_track.queue.put_nowait(b"\xf8\x02")
            await asyncio.sleep(0.02)
            if (any(r.rtt_s is not None for r in reports)
                    and aiortc_compat.sender_rtt(client_sender) is not None):
                break
        # the client's reports reached the server's sink through the fast path...
        assert aiortc_compat.fast_path_packets(transceiver.receiver, rtcp=True) > 0
        assert reports and all(r.fraction_lost == 0 for r in reports)
        # ...with the server sender's RTT, from the LSR/DLSR the client echoed
        rtts = [r.rtt_s for r in reports if r.rtt_s is not None]
        assert rtts, f"no RTT in {REPORTS_TIMEOUT_S} s of reports: {reports}"
        assert 0.0 <= rtts[-1] < 0.5
        # the server's receiver reports echo the client's sender reports (LSR kept
        # from the fast path), so the client estimates its RTT too; and they carry
        # the counters' loss (10 of 100)
        assert aiortc_compat.sender_rtt(client_sender) is not None
        stats = await client_sender.getStats()
        remote = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
        assert remote and remote[-1].packetsLost == 10
    finally:
        await client.close()
        await server.close()


async def test_bye_and_feedback_go_to_aiortc_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    client, server, client_track, _, transceiver = await _server_and_client(monkeypatch)
    handed: list[bytes] = []
    try:
        await _until_the_fast_path(client_track, transceiver)
        dtls = transceiver.receiver.transport
        _observe_rtcp(monkeypatch, dtls, handed.append)
        bye = bytes(RtcpRrPacket(ssrc=1, reports=[])) + bytes(RtcpByePacket(sources=[1]))
        aiortc_compat.handle_rtcp(dtls, bye)
        aiortc_compat.handle_rtcp(dtls, bytes(RtcpRrPacket(ssrc=1, reports=[])))
        aiortc_compat.handle_rtcp(dtls, b"\x81\xc9\x00\x07")  # truncated: dropped
        await asyncio.sleep(0.05)
        assert handed == [bye]
    finally:
        await client.close()
        await server.close()


async def test_the_servers_reports_go_out_at_the_audio_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``take_rtp`` (counters) and ``take_sending``, the server's receiver and sender
    report every 2.5-7.5 s; the client, on aiortc's own loops, every 0.5-1.5 s."""
    client, server, client_track, _, transceiver = await _server_and_client(monkeypatch)
    aiortc_compat.take_sending(transceiver.sender, aiortc_compat.SendCounters(), lambda t: None)
    client_got: list[type] = []
    try:
        _observe_rtcp(monkeypatch, client.getTransceivers()[0].receiver.transport,
                      lambda data: client_got.extend(type(p) for p in RtcpPacket.parse(data)))
        await _until_the_fast_path(client_track, transceiver)
        # wait the window out from the moment the loops started (DTLS up, just before
        # the first fast-path packet): the client has reported, the server not yet
        loop = asyncio.get_running_loop()
        end = loop.time() + WINDOW_S - 0.3
        while loop.time() < end:
            client_track.queue.put_nowait(b"\xf8\x01")
            await asyncio.sleep(0.02)
        # (the client's sender reports; it has no stream from the server to report on)
        assert aiortc_compat.fast_path_packets(transceiver.receiver, rtcp=True) >= 1
        assert RtcpRrPacket not in client_got and RtcpSrPacket not in client_got
        # ...and then it does report, both ways
        end = loop.time() + 2 * aiortc_compat.rtcp.AUDIO_RTCP_INTERVAL_S
        while loop.time() < end and not {RtcpRrPacket, RtcpSrPacket} <= set(client_got):
            client_track.queue.put_nowait(b"\xf8\x01")
            await asyncio.sleep(0.02)
        assert {RtcpRrPacket, RtcpSrPacket} <= set(client_got)
    finally:
        await client.close()
        await server.close()


def test_a_changed_rtcp_loop_is_refused() -> None:
    async def changed(self: object) -> None:
        await asyncio.sleep(1.0)

    with pytest.raises(aiortc_compat.CompatError, match="cannot be paced"):
        aiortc_compat.rtcp.paced_rtcp_loop(changed)
