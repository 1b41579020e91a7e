"""What the ``protocol.aiortc_compat`` tests share: installed, a packet track, a loopback pair.

``_installed`` is an autouse fixture: a test module that imports it starts
every test installed, with the host-address and port-range choices restored.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable, Iterator

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack

from protocol import aiortc_compat
from tests.rtc_helpers import loopback_ice

ARRIVAL_TIMEOUT_S = 5.0


@pytest.fixture(autouse=True)
def _installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts installed and leaves it installed, with the choice restored."""
    aiortc_compat.install()
    monkeypatch.setattr(aiortc_compat.negotiation, "chosen_host_addresses", ())
    monkeypatch.setattr(aiortc_compat.negotiation, "chosen_port_range", None)
    yield
    aiortc_compat.install()


class PacketTrack(MediaStreamTrack):
    """Sends exactly the payloads put into ``queue`` as Opus packets (no encoding)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._pts = 0

    async def recv(self) -> av.Packet:
        packet = av.Packet(await self.queue.get())
        packet.pts = self._pts
        packet.time_base = fractions.Fraction(1, 48_000)
        self._pts += 960
        return packet


def loopback_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[RTCPeerConnection, RTCPeerConnection, PacketTrack]:
    """Two peer connections on 127.0.0.1 and the packet track the first will send."""
    loopback_ice(monkeypatch)
    config = RTCConfiguration(iceServers=[])
    return RTCPeerConnection(config), RTCPeerConnection(config), PacketTrack()


def _report_sink() -> tuple[list[aiortc_compat.ReceiverReport], asyncio.Event,
                            Callable[[aiortc_compat.ReceiverReport], None]]:
    """A receiver-report callback: the reports it got, and an event set at the first."""
    reports: list[aiortc_compat.ReceiverReport] = []
    got = asyncio.Event()

    def sink(report: aiortc_compat.ReceiverReport) -> None:
        reports.append(report)
        got.set()

    return reports, got, sink


async def connect_taking_rtp(sender: RTCPeerConnection, receiver: RTCPeerConnection,
                             sink: aiortc_compat.RtpSink,
                             counters: aiortc_compat.ReceiveCounters | None = None
                             ) -> RTCRtpTransceiver:
    """Offer and answer between two loopback peers, the receiver's one stream's RTP
    taken into ``sink`` (``take_rtp``, before the answer starts its receiver); returns
    the receiver's transceiver."""
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    (transceiver,) = receiver.getTransceivers()
    if counters is None:
        aiortc_compat.take_rtp(transceiver.receiver, sink)
    else:
        aiortc_compat.take_rtp(transceiver.receiver, sink, counters)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return transceiver
