"""``aiortc_compat.polled``: a connected peer's socket read at the tick, with kernel times.

Real aiortc peers on 127.0.0.1: the server side takes its RTP (``take_rtp`` with
counters: the fast path) and its sending (``take_sending(polled=True)``), as
``sfu.peer.Peer`` does.
"""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from protocol import aiortc_compat
from protocol.aiortc_compat import polled
from tests.aiortc_compat_support import (
    PacketTrack,
    _installed,  # noqa: F401 (an autouse fixture)
    loopback_pair,
)

pytestmark = pytest.mark.skipif(not polled.supported(), reason="polled sockets are Linux-only")

FRAME_S = 0.02
SENT_AFTER_ROUTING = 10


def _no_counters() -> aiortc_compat.ReceiveCounters:
    return aiortc_compat.ReceiveCounters(0, 0, 0, 0, 0.0)


async def _connect(client: RTCPeerConnection, server: RTCPeerConnection,
                   sink: aiortc_compat.RtpSink, client_sink: aiortc_compat.RtpSink,
                   client_track: PacketTrack, *, polled_receive: bool
                   ) -> list[aiortc_compat.SendTarget]:
    """The client offers audio; the server answers as a Disco peer does."""
    targets: list[aiortc_compat.SendTarget] = []
    client.addTrack(client_track)
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    (transceiver,) = server.getTransceivers()
    transceiver.sender.replaceTrack(PacketTrack())  # never yields: we send ourselves
    transceiver.direction = "sendrecv"
    aiortc_compat.take_sending(transceiver.sender, aiortc_compat.SendCounters(),
                               targets.append, polled=polled_receive)
    aiortc_compat.take_rtp(transceiver.receiver, sink, _no_counters)
    await server.setLocalDescription(await server.createAnswer())
    (client_transceiver,) = client.getTransceivers()
    aiortc_compat.take_rtp(client_transceiver.receiver, client_sink)
    await client.setRemoteDescription(server.localDescription)
    for _ in range(200):
        if targets:
            break
        await asyncio.sleep(0.025)
    assert targets, "the server's sender never started"
    return targets


async def _wait_for(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_a_polled_socket_waits_for_the_poll_and_keeps_the_kernels_arrival_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, server, track = loopback_pair(monkeypatch)
    got: list[aiortc_compat.InboundRtp] = []
    heard: list[aiortc_compat.InboundRtp] = []
    loop = asyncio.get_running_loop()
    try:
        (target,) = await _connect(client, server, lambda p, m: got.append(p),
                                   lambda p, m: heard.append(p), track, polled_receive=True)
        assert target.polled
        poll = aiortc_compat.poll_sockets
        # The first packet of the stream comes through aiortc (it routes the SSRC);
        # the loop does not read the socket any more, so it waits for a poll.
        await track.queue.put(b"\xf8first")
        await asyncio.sleep(0.3)
        assert got == []
        await _wait_for(lambda: poll() >= 0 and bool(got))
        assert got[0].payload == b"\xf8first"
        # Ten more, 20 ms apart, not read until the one poll after them all.
        for i in range(SENT_AFTER_ROUTING):
            await track.queue.put(b"\xf8p%d" % i)
            await asyncio.sleep(FRAME_S)
        await asyncio.sleep(0.1)
        assert len(got) == 1
        polled_at = loop.time()
        assert poll() >= SENT_AFTER_ROUTING
        fast = got[1:]
        assert [p.payload for p in fast] == [b"\xf8p%d" % i for i in range(SENT_AFTER_ROUTING)]
        arrivals = [p.arrival_s for p in fast if p.arrival_s is not None]
        assert len(arrivals) == SENT_AFTER_ROUTING and all(a < polled_at for a in arrivals)
        # The kernel's times, not the poll's: as far apart as they were sent.
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert all(gap > 0.005 for gap in gaps), gaps
        assert arrivals[-1] - arrivals[0] > 0.7 * FRAME_S * (SENT_AFTER_ROUTING - 1)
        # Sending goes out on the same socket and reaches the client.
        opus = target.payload_type("audio/opus")
        assert opus is not None
        packet = RtpPacket(payload_type=opus, sequence_number=7, timestamp=960,
                           ssrc=target.ssrc, payload=b"\xf8back")
        target.send(target.protect(packet.serialize()))
        await _wait_for(lambda: bool(heard))
        assert heard[0].payload == b"\xf8back"
    finally:
        await client.close()
        await asyncio.wait_for(server.close(), 10)  # aioice waits for connection_lost


async def test_closing_the_connection_closes_the_taken_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, server, track = loopback_pair(monkeypatch)
    try:
        (target,) = await _connect(client, server, lambda p, m: None, lambda p, m: None,
                                   track, polled_receive=True)
        (transceiver,) = server.getTransceivers()
        ice = aiortc_compat.ice_connection(transceiver.receiver.transport.transport)
        (taken,) = [pair.protocol.transport for pair in ice._nominated.values()]
        assert isinstance(taken, polled.PolledSocket)
        sock = taken.socket
        assert sock.fileno() >= 0
    finally:
        await client.close()
        await asyncio.wait_for(server.close(), 10)
    assert sock.fileno() == -1
    assert target.polled and aiortc_compat.poll_sockets() == 0  # nothing left to read


@pytest.mark.parametrize("why", ["polling-off", "socket-refused"])
async def test_a_socket_not_polled_is_read_by_the_loop_as_packets_come(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, why: str,
) -> None:
    """Polling off, or a socket that cannot be taken (a warning): the call goes on, the
    event loop reading the socket."""
    if why == "socket-refused":
        def refuse(protocol: object, fast: object) -> polled.PolledSocket:
            raise aiortc_compat.CompatError("refused by the test")

        monkeypatch.setattr(polled, "take_socket", refuse)
    client, server, track = loopback_pair(monkeypatch)
    got: list[aiortc_compat.InboundRtp] = []
    try:
        (target,) = await _connect(client, server, lambda p, m: got.append(p), lambda p, m: None,
                                   track, polled_receive=why != "polling-off")
        assert not target.polled
        assert ("stays the event loop's: refused by the test" in caplog.text) == (
            why == "socket-refused")
        for i in range(3):
            await track.queue.put(b"\xf8p%d" % i)
        await _wait_for(lambda: len(got) == 3)  # read by the loop: nobody polls
        assert all(p.arrival_s is None for p in got)
    finally:
        await client.close()
        await server.close()


class _Recorder:
    """Stands in for aioice's protocol and the fast path around a bare socket."""

    def __init__(self) -> None:
        self.taken: list[tuple[bytes, float | None]] = []
        self.handed_on: list[bytes] = []
        self.lost = asyncio.Event()

    def take(self, data: bytes, arrival: float | None) -> bool:
        if data[:1] == b"\x80":
            self.taken.append((data, arrival))
            return True
        return False

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.handed_on.append(data)

    def error_received(self, exc: Exception) -> None:
        raise AssertionError(f"unexpected {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, polled.SO_TIMESTAMPNS, 1)
    return sock


async def test_a_flooded_socket_waits_its_turn_and_the_rest_are_read() -> None:
    """One poll reads at most ``MAX_ROUNDS_PER_POLL`` datagrams of one socket, every other
    ready socket's too; what is not a routed SSRC's SRTP goes to the protocol."""
    flooded, quiet = _Recorder(), _Recorder()
    a = polled.PolledSocket(_bound_socket(), flooded, flooded)  # type: ignore[arg-type]
    b = polled.PolledSocket(_bound_socket(), quiet, quiet)  # type: ignore[arg-type]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flood = polled.MAX_ROUNDS_PER_POLL + 36
        for i in range(flood):
            sender.sendto(b"\x80rtp%d" % i, a.get_extra_info("sockname"))
        sender.sendto(b"\x01stun", b.get_extra_info("sockname"))
        sender.sendto(b"\x80rtp", b.get_extra_info("sockname"))
        await asyncio.sleep(0.05)
        assert aiortc_compat.poll_sockets() == polled.MAX_ROUNDS_PER_POLL + 2
        assert len(flooded.taken) == polled.MAX_ROUNDS_PER_POLL
        assert quiet.handed_on == [b"\x01stun"] and [d for d, _ in quiet.taken] == [b"\x80rtp"]
        assert aiortc_compat.poll_sockets() == flood - polled.MAX_ROUNDS_PER_POLL
        assert [d for d, _ in flooded.taken] == [b"\x80rtp%d" % i for i in range(flood)]
        arrivals = [t for _, t in flooded.taken]
        now = asyncio.get_running_loop().time()
        assert all(t is not None and now - 1.0 < t <= now for t in arrivals)
        assert aiortc_compat.poll_sockets() == 0
    finally:
        sender.close()
        a.close()
        b.close()
    await asyncio.wait_for(flooded.lost.wait(), 1)
    assert a.socket.fileno() == -1 and aiortc_compat.poll_sockets() == 0


def test_a_protocol_without_a_socket_is_not_taken() -> None:
    class NoTransport:
        transport = None

    with pytest.raises(aiortc_compat.CompatError, match="no transport with a socket"):
        polled.take_socket(NoTransport(), _Recorder())  # type: ignore[arg-type]


def test_a_uvloop_socket_is_taken() -> None:
    """``disco serve`` runs on uvloop, whose transports are not ``asyncio.BaseTransport``
    subclasses (a check that asked for one left every socket to the loop, unnoticed by
    the tests, which run on asyncio's loop)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[int, list[bytes]]:
        recorder = _Recorder()
        loop = asyncio.get_running_loop()
        class Protocol(asyncio.DatagramProtocol):  # keeps its transport, as aioice's does
            transport: asyncio.BaseTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: object) -> None:
                recorder.datagram_received(data, addr)

        _, protocol = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
        taken = polled.take_socket(protocol, recorder)  # type: ignore[arg-type]
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(b"\x80rtp", taken.get_extra_info("sockname"))
        sender.close()
        await asyncio.sleep(0.05)
        n = aiortc_compat.poll_sockets()
        taken.close()
        return n, [d for d, _ in recorder.taken]

    assert uvloop.run(main()) == (1, [b"\x80rtp"])
