"""aiortc wiring: the mic and music tracks we send, the mix we receive, one peer connection.

aiortc's camelCase stays in this module. The rest of the client sees
``MediaLink`` (offer, answer, close), tracks that pull 20 ms frames from a
``FrameSource``, and a callback that receives the mix as mono 48 kHz samples.

Receiving: aiortc's own receiver throws away a dozen frames around every
lost packet, so the mix's RTP packets are taken off it
(``aiortc_compat.take_rtp``) into a ``protocol.playout.PlayoutStream``, the
server's own inbound path: reordered within a depth that follows the
measured jitter, a lost frame rebuilt from the next packet's FEC (the server
adds FEC when our receiver reports show loss), PLC for the rest. A 20 ms
clock pops one frame per tick to the callback.

Pacing: ``MicTrack`` runs on the wall clock (frame n is due at start + n x
20 ms, so timing errors never accumulate) rather than on the sound card's
clock, so a file, a device or nothing at all all look the same to the
sender; the bounded buffers in ``audio``/``devices`` absorb the drift
between the two clocks. Frames keep flowing while muted (as silence): the
server drops a participant whose audio stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from clients.desktop.audio import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE_HZ,
    EchoGuard,
    MicControl,
    Pcm,
    silence,
)
from protocol import aiortc_compat
from protocol.playout import PlayoutStream

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
MAX_LATE_FRAMES = 5
"""If the loop stalls longer than this, restart the clock instead of bursting frames."""
LOOPBACK_V4 = "127.0.0.1"


class FrameSource(Protocol):
    def read_frame(self) -> Pcm | None: ...


class FrameClock:
    """Due times for 20 ms frames on the monotonic clock, without drift."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.n = 0

    async def wait_next(self) -> int:
        """Sleep until the next frame is due; returns its index (its pts / 960)."""
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.n * FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > MAX_LATE_FRAMES * FRAME_S:
            self.start = now - self.n * FRAME_S  # stalled: do not burst to catch up
        n = self.n
        self.n += 1
        return n

    def restart(self) -> None:
        """The next frame is due now (after an idle period), pts keeps counting."""
        self.start = time.monotonic() - self.n * FRAME_S


def _frame(pcm: Pcm, index: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE_HZ
    frame.pts = index * FRAME_SAMPLES
    frame.time_base = TIME_BASE
    return frame


class MicTrack(MediaStreamTrack):
    """Our voice: frames from ``source`` gated by mute/push-to-talk and the echo guard."""

    kind = "audio"

    def __init__(
        self, source: FrameSource | None, control: MicControl, echo: EchoGuard | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.control = control
        self.echo = echo
        self._clock = FrameClock()
        self.frames_sent = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._clock.wait_next()
        pcm = self.source.read_frame() if self.source is not None else None
        if pcm is None or not self.control.on_air:
            pcm = silence()
        elif self.echo is not None:
            pcm = self.echo.apply(pcm, time.monotonic())
        self.frames_sent += 1
        return _frame(pcm, index)


class MusicTrack(MediaStreamTrack):
    """Shared music: frames from a file while one plays; idle (no packets) otherwise.

    Idle means ``recv`` simply waits, so aiortc sends nothing and the server
    decodes nothing; music can start without a new offer.
    """

    kind = "audio"

    def __init__(self, on_finished: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._source: FrameSource | None = None
        self._wake = asyncio.Event()
        self._clock = FrameClock()
        self._on_finished = on_finished

    @property
    def playing(self) -> bool:
        return self._source is not None

    def play(self, source: FrameSource | None) -> None:
        self._source = source
        if source is not None:
            self._wake.set()

    async def recv(self) -> AudioFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._source is None:
                self._wake.clear()
                await self._wake.wait()
                self._clock.restart()
                continue
            index = await self._clock.wait_next()
            source = self._source
            pcm = source.read_frame() if source is not None else None
            if pcm is None:
                self._source = None
                if self._on_finished is not None:
                    self._on_finished()
                pcm = silence()  # one closing frame of silence; then idle
            return _frame(pcm, index)

    def stop(self) -> None:
        super().stop()
        self._wake.set()


def install_rtc_patches() -> None:
    """Check and install the aiortc/aioice patches (``protocol.aiortc_compat``) at start.

    Raises ``aiortc_compat.CompatError`` if an installed aiortc or aioice no
    longer has what they rely on: better than a client that cannot connect.
    """
    aiortc_compat.install()


def use_loopback_candidates() -> None:
    """Make aioice offer only 127.0.0.1 as our host candidate (process-wide).

    aioice's ``get_host_addresses`` skips loopback, so a client talking to a
    server on this machine's loopback (a laptop demo, the tests) would offer
    only its LAN addresses, and the server would have to reach those from
    127.0.0.1. Only loopback can reach a loopback server, so we offer exactly
    127.0.0.1: ICE has one pair to check and nothing is sent off the machine.
    Called only when ``--server`` is a loopback address. There is no
    per-connection option in aioice: ``protocol.aiortc_compat`` (shared with
    the server, importing nothing of it) owns the process-wide choice.
    """
    aiortc_compat.install()
    aiortc_compat.set_host_addresses((LOOPBACK_V4,))


def ice_servers(welcome_servers: Any) -> list[RTCIceServer]:
    """``welcome.ice_servers`` as aiortc objects; never None (None adds Google's STUN)."""
    out: list[RTCIceServer] = []
    for server in welcome_servers or []:
        if not isinstance(server, dict) or not server.get("urls"):
            continue
        urls = server["urls"]
        out.append(RTCIceServer(
            urls=list(urls) if isinstance(urls, list) else [str(urls)],
            username=server.get("username"), credential=server.get("credential"),
        ))
    return out


def _ignore(_: Any) -> None:
    return None


class MediaLink:
    """One peer connection to the room's media server: voice (+ music) up, the mix down."""

    def __init__(
        self,
        servers: list[RTCIceServer],
        mic: MicTrack,
        music: MusicTrack | None,
        on_audio: Callable[[Pcm], None],
        on_state: Callable[[str], None],
    ) -> None:
        self.mic = mic
        self.music = music
        self._on_audio = on_audio
        self._on_state = on_state
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._pc.addTrack(mic)
        self._music_transceiver = (
            self._pc.addTransceiver(music, direction="sendonly") if music is not None else None
        )
        self._readers: list[asyncio.Task[None]] = []
        self.playout = PlayoutStream()
        self.frames_received = 0
        """RTP packets of the mix received."""
        self.last_audio_at: float | None = None
        self._pc.on("connectionstatechange", self._state_changed)

    @property
    def state(self) -> str:
        return str(self._pc.connectionState)

    def detach(self) -> None:
        """Stop reporting state and audio (this link is being replaced)."""
        self._on_state = _ignore
        self._on_audio = _ignore

    def _state_changed(self) -> None:
        self._on_state(self.state)

    def _packet(self, rtp: aiortc_compat.InboundRtp, mime: str) -> None:
        if mime not in ("audio/opus", "audio/red") or not rtp.payload:
            return
        now = asyncio.get_running_loop().time()
        if mime == "audio/red":
            self.playout.push_red(rtp.sequence_number, rtp.timestamp, rtp.payload, now)
        else:
            self.playout.push(rtp.sequence_number, rtp.timestamp, rtp.payload, now)
        self.frames_received += 1
        self.last_audio_at = now

    async def _play(self) -> None:
        """One frame of the mix per 20 ms tick to the callback, from the first one that
        plays on (silence included, so the device's buffer keeps its pace)."""
        clock = FrameClock()
        loop = asyncio.get_running_loop()
        started = False
        while True:
            await clock.wait_next()
            pcm = self.playout.pop(loop.time())
            started = started or not self.playout.silent
            if started:
                self._on_audio(pcm)

    async def offer(self) -> tuple[str, list[str]]:
        """Our offer SDP (with all our candidates) and the mids that carry music."""
        await self._pc.setLocalDescription(await self._pc.createOffer())
        mids = []
        if self._music_transceiver is not None and self._music_transceiver.mid is not None:
            mids.append(str(self._music_transceiver.mid))
        return self._pc.localDescription.sdp, mids

    async def accept(self, answer_sdp: str) -> None:
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        mix = self._pc.getTransceivers()[0].receiver  # the mic's transceiver brings the mix
        aiortc_compat.take_rtp(mix, self._packet)
        if not self._readers:
            self._readers.append(asyncio.create_task(self._play(), name="rtc-playout"))

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()
        self.mic.stop()
        if self.music is not None:
            self.music.stop()
        with contextlib.suppress(Exception):
            await self._pc.close()
