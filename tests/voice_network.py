"""Speech through a real ``MediaRoom`` over impaired loopback links (aiortc peers).

Shared by ``tests/test_voice_networks.py``, ``tests/test_client_rtc.py`` and
``bench/voice_quality.py --real``. A talker (``SpeechTrack``) sends speech as
a browser does after the answer's ``useinbandfec=1`` (Opus with FEC, 48
kbps, from ``protocol.opus``); a listener records the RTP packets of its mix
with their arrival times (``Arrivals``) and plays them out as a browser's
NetEQ would (``protocol.playout.PlayoutStream``). A ``Client`` joined with
``relayed=True`` goes through a ``tests.impair.UdpRelay``: its offer's and
the answer's host candidates are rewritten to the relay's port, so each side
only ever sees the relay (no direct path for ICE to prefer).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from protocol import aiortc_compat
from protocol.opus import FRAME_SAMPLES, Encoder
from protocol.playout import PlayoutStream
from protocol.uplink import IdleTrack, UplinkStream
from sfu.codec import make_packet
from sfu.levels import levels_dbov
from sfu.room import MediaConfig, MediaRoom
from tests.impair import CLEAN, Impairment, UdpRelay
from tests.speech import Pcm, holes, pesq_wb

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
    silence; with ``dtx``, silent stretches send one packet per 400 ms, as WebRTC does.
    With ``levels``, a ``Client`` sends each packet's RFC 6464 level (``level_dbov``,
    of the frame just encoded), as a browser does."""

    kind = "audio"

    def __init__(self, clip: Pcm, *, dtx: bool = False, levels: bool = False) -> None:
        super().__init__()
        self.levels = levels
        self.level_dbov = -127
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
            self.level_dbov = round(float(levels_dbov(pcm)[0]))
            pts = self._pts
            self._pts += FRAME_SAMPLES
            self._silent_run = self._silent_run + 1 if len(payload) <= 2 else 0
            if self._silent_run % 20 in (0, 1):  # DTX: the first silent frame, then 400 ms
                return make_packet(payload, pts)


@dataclass
class Arrivals:
    """Every RTP packet a receiver got, with its arrival time (loop clock); RED
    (when the server sends it) is unpacked as a browser does."""

    packets: list[tuple[float, aiortc_compat.InboundRtp]] = field(default_factory=list)
    red_pts: set[int] = field(default_factory=set)
    """Payload types that came as RED."""
    red: int = 0
    """Packets that came as RED."""
    last_playout: PlayoutStream | None = None

    def sink(self, rtp: aiortc_compat.InboundRtp, mime: str) -> None:
        self.packets.append((asyncio.get_running_loop().time(), rtp))
        if mime == "audio/red":
            self.red += 1
            self.red_pts.add(rtp.payload_type)

    def play(self, start: float, seconds: float) -> Pcm:
        """What a browser would play from ``start`` on: one 20 ms tick at a time."""
        stream = self.last_playout = PlayoutStream()
        out = []
        i = 0
        packets = sorted(self.packets, key=lambda p: p[0])
        for k in range(round(seconds / FRAME_S)):
            now = start + k * FRAME_S
            while i < len(packets) and packets[i][0] <= now:
                at, rtp = packets[i]
                if rtp.payload_type in self.red_pts:
                    stream.push_red(rtp.sequence_number, rtp.timestamp, rtp.payload, at)
                else:
                    stream.push(rtp.sequence_number, rtp.timestamp, rtp.payload, at)
                i += 1
            out.append(stream.pop(now))
        return np.concatenate(out)


class Client:
    """One peer. A talker sends as Chrome does: through ``protocol.uplink.UplinkStream``,
    RED with one earlier frame when the answer accepts RED (Disco's does, Janus's does
    not: plain Opus there). With ``track.levels`` (RFC 6464 in each packet) it sends
    through aiortc's sender instead, plain Opus (the level goes in there)."""

    def __init__(self, name: str, track: SpeechTrack | None) -> None:
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.arrivals = Arrivals()
        self.relay: UdpRelay | None = None
        self.uplink: UplinkStream | None = None
        self._track = track
        self._pump: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._state)
        if track is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        elif track.levels:
            sender = self.pc.addTrack(track)
            aiortc_compat.send_audio_level(sender, lambda: track.level_dbov)
        else:
            self.uplink = UplinkStream()
            sender = self.pc.addTrack(IdleTrack())
            aiortc_compat.take_sending(sender, self.uplink.counters, self.uplink.start)

    async def _send(self) -> None:
        assert self._track is not None and self.uplink is not None
        try:
            while True:
                packet = await self._track.recv()
                assert packet.pts is not None
                self.uplink.send(bytes(packet), int(packet.pts))
        except MediaStreamError:
            pass

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
        await self.connected()

    async def connected(self) -> None:
        """Wait for the connection; then a talker starts sending (as aiortc's sender
        would start pulling its track)."""
        await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT_S)
        if self.uplink is not None and self._pump is None:
            self._pump = asyncio.create_task(self._send())

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.uplink is not None:
            self.uplink.stop()
        await self.pc.close()
        if self.relay is not None:
            self.relay.close()


@dataclass
class Path:
    room: MediaRoom
    events: list[dict[str, Any]]
    clients: list[Client] = field(default_factory=list)


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




async def score_condition(clip: Pcm, up: Impairment, down: Impairment,
                          config: MediaConfig | None = None) -> tuple[float, int, float]:
    """One run in a fresh room (for the bench): (PESQ, holes, hole %)."""
    events: list[dict[str, Any]] = []
    room = MediaRoom("g-bench", config or MediaConfig(), events.append)
    await room.start()
    path = Path(room, events)
    try:
        return await talk_and_score(path, clip, up, down)
    finally:
        for c in path.clients:
            await c.close()
        await room.close()
