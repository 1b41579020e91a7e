"""Speech through the server over impaired loopback links, with real aiortc peers.

A talker sends ~8 s of espeak-ng speech as a browser does after the answer's
``useinbandfec=1`` (Opus with FEC, 48 kbps, from ``protocol.opus``); a listener
records the RTP packets of its mix with their arrival times and plays them
out as a browser's NetEQ would (``protocol.playout.PlayoutStream``: reorder,
FEC from the next packet, PLC); the result is scored by wideband PESQ
against what was said. One link goes through ``tests.impair.UdpRelay``: the
offer's and the answer's host candidates are rewritten to the relay's port,
so each side only ever sees the relay (no direct path for ICE to prefer).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client import REGISTRY

from protocol import aiortc_compat
from protocol.opus import FRAME_SAMPLES, Encoder
from protocol.playout import PlayoutStream
from sfu.codec import make_packet
from sfu.room import MediaConfig, MediaRoom
from tests.impair import CLEAN, Impairment, UdpRelay
from tests.rtc_helpers import loopback_ice
from tests.speech import Pcm, holes, pesq_wb, speech

FRAME_S = 0.02
CLIP_S = 8.0
TAIL_S = 1.0
"""Recording goes on this long after the clip (the path's delay, the buffers)."""
CONNECT_TIMEOUT_S = 15.0
SETTLE_S = 2.5
_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


def host_port(sdp: str) -> int:
    (match,) = list(_CANDIDATE.finditer(sdp))
    return int(match.group(2))


def via(sdp: str, port: int) -> str:
    """``sdp`` with its loopback host candidate moved to ``port`` (the relay's)."""
    return _CANDIDATE.sub(lambda m: f"{m.group(1)}{port}{m.group(3)}", sdp)


class SpeechTrack(MediaStreamTrack):
    """Opus packets paced in real time: silence until ``say()``, then the clip, then
    silence; with ``dtx``, silent stretches send one packet per 400 ms, as WebRTC does."""

    kind = "audio"

    def __init__(self, clip: Pcm, *, dtx: bool = False) -> None:
        super().__init__()
        self._clip = clip
        self._encoder = Encoder(48_000, fec=True, packet_loss_perc=10, dtx=dtx)
        self._pos: int | None = None
        self._pts = 0
        self._start: float | None = None
        self._silent_run = 0
        self.said_at: float | None = None

    def say(self) -> None:
        self._pos = 0

    async def recv(self) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            if self._start is None:
                self._start = loop.time()
            wait = self._start + self._pts / 48_000 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            if self._pos is not None and self._pos < self._clip.shape[0]:
                if self._pos == 0:
                    self.said_at = loop.time()
                pcm = self._clip[self._pos:self._pos + FRAME_SAMPLES]
                self._pos += FRAME_SAMPLES
            payload = self._encoder.encode(pcm)
            pts = self._pts
            self._pts += FRAME_SAMPLES
            self._silent_run = self._silent_run + 1 if len(payload) <= 2 else 0
            if self._silent_run % 20 in (0, 1):  # DTX: the first silent frame, then 400 ms
                return make_packet(payload, pts)


@dataclass
class Arrivals:
    """Every RTP packet a receiver got, with its arrival time (loop clock)."""

    packets: list[tuple[float, aiortc_compat.InboundRtp]] = field(default_factory=list)

    def sink(self, rtp: aiortc_compat.InboundRtp, mime: str) -> None:
        self.packets.append((asyncio.get_running_loop().time(), rtp))

    def play(self, start: float, seconds: float) -> Pcm:
        """What a browser would play from ``start`` on: one 20 ms tick at a time."""
        stream = PlayoutStream()
        out = []
        i = 0
        packets = sorted(self.packets, key=lambda p: p[0])
        for k in range(round(seconds / FRAME_S)):
            now = start + k * FRAME_S
            while i < len(packets) and packets[i][0] <= now:
                at, rtp = packets[i]
                stream.push(rtp.sequence_number, rtp.timestamp, rtp.payload, at)
                i += 1
            out.append(stream.pop(now))
        return np.concatenate(out)


class Client:
    def __init__(self, name: str, track: SpeechTrack | None) -> None:
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.arrivals = Arrivals()
        self.relay: UdpRelay | None = None
        self._connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._state)
        if track is not None:
            self.pc.addTrack(track)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

    def _state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()

    async def join(self, room: MediaRoom, up: Impairment = CLEAN,
                   down: Impairment = CLEAN, relayed: bool = False) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if relayed:
            self.relay = await UdpRelay.start(("127.0.0.1", 9), up, down)
            offer = via(offer, self.relay.address[1])
        (receiver,) = [t.receiver for t in self.pc.getTransceivers()]
        answer = await room.connect(self.name, offer)
        if self.relay is not None:
            self.relay.target = ("127.0.0.1", host_port(answer))
            answer = via(answer, self.relay.address[1])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        aiortc_compat.take_rtp(receiver, self.arrivals.sink)
        await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        await self.pc.close()
        if self.relay is not None:
            self.relay.close()


@dataclass
class Path:
    room: MediaRoom
    events: list[dict[str, Any]]
    clients: list[Client] = field(default_factory=list)


@pytest.fixture
async def path(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    loopback_ice(monkeypatch)
    events: list[dict[str, Any]] = []
    room = MediaRoom("g-net", MediaConfig(peer_timeout_s=2.0), events.append)
    await room.start()
    p = Path(room, events)
    yield p
    for c in p.clients:
        await c.close()
    await room.close()


@pytest.fixture(scope="module")
def clip() -> Pcm:
    pcm = speech()
    return pcm[: round(CLIP_S / FRAME_S) * FRAME_SAMPLES]


async def talk_and_score(path: Path, clip: Pcm, up: Impairment, down: Impairment
                         ) -> tuple[float, int, float]:
    """The talker's uplink and the listener's downlink as given; (PESQ, holes, hole %)."""
    track = SpeechTrack(clip)
    talker, listener = Client("talker", track), Client("listener", None)
    path.clients += [talker, listener]
    await talker.join(path.room, up=up, relayed=up != CLEAN)
    await listener.join(path.room, down=down, relayed=down != CLEAN)
    # Settle: the server's buffer measures the uplink; the listener's receiver
    # reports (about one a second) reach the mix's encoder, which turns FEC on.
    await asyncio.sleep(SETTLE_S)
    track.say()
    await asyncio.sleep(CLIP_S + TAIL_S)
    assert track.said_at is not None
    heard = listener.arrivals.play(track.said_at, CLIP_S + TAIL_S)
    score, gaps = pesq_wb(clip, heard), holes(clip, heard)
    return score, gaps, 100.0 * gaps / (clip.shape[0] / FRAME_SAMPLES)


@pytest.mark.parametrize(("up", "down", "floor"), [
    (Impairment(loss=0.10, seed=1), CLEAN, 2.6),
    (CLEAN, Impairment(loss=0.10, seed=2), 2.6),
    (Impairment(jitter_ms=60.0, seed=3), CLEAN, 2.8),
], ids=["10% loss up", "10% loss down", "0-60 ms jitter up"])
async def test_speech_through_an_impaired_link_keeps_its_floor(
    path: Path, clip: Pcm, up: Impairment, down: Impairment, floor: float
) -> None:
    score, gaps, gap_perc = await talk_and_score(path, clip, up, down)
    print(f"{up.describe()} up, {down.describe()} down: PESQ {score:.2f}, {gaps} holes")
    assert score >= floor, f"PESQ {score:.2f} < {floor} ({gaps} holes)"
    assert gap_perc < 2.0


async def test_a_dtx_silent_talker_is_neither_removed_nor_counted_as_loss(
    path: Path, clip: Pcm
) -> None:
    track = SpeechTrack(clip[: 100 * FRAME_SAMPLES], dtx=True)  # 2 s of speech, then DTX
    talker, listener = Client("talker", track), Client("listener", None)
    path.clients += [talker, listener]
    await talker.join(path.room)
    await listener.join(path.room)
    track.say()
    await asyncio.sleep(2.0 + 3 * path.room.config.peer_timeout_s)  # DTX far past the timeout
    assert "talker" in path.room.participant_ids()
    assert not [e for e in path.events if e.get("type") == "peer_state"
                and e.get("state") == "failed"]
    up_loss = REGISTRY.get_sample_value(
        "disco_sfu_link_loss_percent",
        {"room": "g-net", "participant": "talker", "direction": "up"})
    assert up_loss == 0.0
    assert not [e for e in path.events if e.get("type") == "quality"]  # still excellent
