"""Real aiortc client peers for tests: tone senders, recorders, spectra, coturn.

Reusable by any test that needs WebRTC audio on the loopback (signaling,
proximity, billing). Everything stays on 127.0.0.1:

* ``loopback_ice(monkeypatch)`` makes aioice offer 127.0.0.1 as the only host
  candidate (aioice leaves loopback out by default) through
  ``protocol.aiortc_compat``, and clients are built
  with ``iceServers=[]`` so aiortc adds no public STUN server.
* ``RtcClient`` is one participant: an ``RTCPeerConnection`` sending a sine
  tone (``ToneTrack``; change ``client.tone.frequency_hz`` at any time, None
  is silence), optionally a second "music" track, and recording what it
  receives (``client.recorder``).
* ``has_tone`` / ``lacks_tone`` / ``tone_level_db`` look at a spectrum: is a
  frequency there, and how loud (dBFS).
* ``coturn(...)`` starts a real coturn on 127.0.0.1 for relay-only tests.

Typical use with a ``MediaRoom``::

    client = RtcClient("alice", tone_hz=440)
    answer = await room.connect("alice", await client.offer())
    await client.accept(answer)
    await client.wait_connected()
    await client.recorder.wait_frames(50)
    samples = client.recorder.last(1.0)
    assert has_tone(samples, 660)
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import os
import random
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from protocol import aiortc_compat
from tests.services import stop_process

SAMPLE_RATE_HZ = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
FULL_SCALE = 32_768.0
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
CONNECT_TIMEOUT_S = 10.0

Samples = npt.NDArray[np.int16]


# --- loopback only ------------------------------------------------------------------


def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offer only 127.0.0.1 as ICE host candidate (process-wide, undone after the test).

    Installs the aiortc/aioice patches as the server and client do at start
    (idempotent), then chooses loopback through them.
    """
    aiortc_compat.install()
    monkeypatch.setattr(aiortc_compat.negotiation, "chosen_host_addresses", ("127.0.0.1",))


# --- sending --------------------------------------------------------------------------


class ToneTrack(MediaStreamTrack):
    """A 48 kHz mono sine, paced in real time, 20 ms per frame.

    Set ``frequency_hz`` to None for silence and back to a frequency for the
    tone; the phase stays continuous so no click is sent. ``onsets`` records
    ``(monotonic time, pts)`` of each silence -> tone switch as it is sent,
    which the voice benchmark uses to measure latency.
    """

    kind = "audio"

    def __init__(self, frequency_hz: float | None = 440.0, amplitude: float = 0.25) -> None:
        super().__init__()
        self.frequency_hz = frequency_hz
        self.amplitude = amplitude
        self.onsets: list[tuple[float, int]] = []
        self.frames_sent = 0
        self._phase = 0.0
        self._pts = 0
        self._start: float | None = None
        self._was_silent = True

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / SAMPLE_RATE_HZ - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        freq = self.frequency_hz
        if freq is None:
            pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            self._was_silent = True
        else:
            step = 2 * math.pi * freq / SAMPLE_RATE_HZ
            phases = self._phase + step * np.arange(FRAME_SAMPLES)
            self._phase = float((phases[-1] + step) % (2 * math.pi))
            pcm = (np.sin(phases) * self.amplitude * 32_767).astype(np.int16)
            if self._was_silent:
                self.onsets.append((time.monotonic(), self._pts))
            self._was_silent = False
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return frame


# --- receiving ------------------------------------------------------------------------


class Recorder:
    """Records a received audio track as mono int16 with monotonic arrival times."""

    def __init__(self) -> None:
        self._chunks: list[Samples] = []
        self._times: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._new_frame = asyncio.Event()

    @property
    def frames(self) -> int:
        return len(self._chunks)

    def start(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            arr = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            self._chunks.append(arr[:, 0].astype(np.int16))
            self._times.append(time.monotonic())
            self._new_frame.set()

    async def wait_frames(self, count: int, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Wait until ``count`` more frames than now have arrived."""
        target = self.frames + count
        deadline = time.monotonic() + timeout_s
        while self.frames < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"received {self.frames} frames, wanted {target}")
            self._new_frame.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_frame.wait(), remaining)

    def since(self, t: float) -> Samples:
        """Samples of the frames that arrived after monotonic time ``t``."""
        chunks = [c for c, at in zip(self._chunks, self._times, strict=True) if at > t]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def last(self, seconds: float) -> Samples:
        """The most recent ``seconds`` of received audio."""
        n = max(1, round(seconds * 1000 / FRAME_MS))
        chunks = self._chunks[-n:]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def frames_with_times(self) -> list[tuple[float, Samples]]:
        return list(zip(self._times, self._chunks, strict=True))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def record_for(recorders: list[Recorder], seconds: float) -> list[Samples]:
    """Record ``seconds`` of fresh audio on every recorder at once."""
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    return [r.since(t0) for r in recorders]


# --- spectra --------------------------------------------------------------------------


def _band_power(samples: Samples, freq_hz: float, half_width_hz: float) -> tuple[float, float]:
    """(power in the band around ``freq_hz``, median power per bin) of a Hann-windowed FFT."""
    if samples.size < FRAME_SAMPLES:
        raise ValueError(f"need at least {FRAME_SAMPLES} samples, got {samples.size}")
    x = samples.astype(np.float64) / FULL_SCALE
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE_HZ)
    band = np.abs(freqs - freq_hz) <= half_width_hz
    voice_range = (freqs > 50) & (freqs < 8000)
    return float(spectrum[band].sum()), float(np.median(spectrum[voice_range]) + 1e-30)


def tone_snr_db(samples: Samples, freq_hz: float, half_width_hz: float = 8.0) -> float:
    """How far the band around ``freq_hz`` stands above the median spectrum, in dB."""
    band, noise = _band_power(samples, freq_hz, half_width_hz)
    bins = max(1.0, 2 * half_width_hz * samples.size / SAMPLE_RATE_HZ)
    return 10 * math.log10(band / bins / noise + 1e-30)


PRESENT_DB = -25.0
"""A tone at or above this level (dBFS) counts as heard. Test tones (amplitude
0.25, -12 dBFS) arrive at about -15 dBFS through a 32 kbps Opus mix."""
ABSENT_DB = -32.0
"""A tone below this level counts as not heard. Opus coding noise near other
tones reaches about -35..-40 dBFS, so this keeps a margin on both sides while
an audible voice would be 15+ dB above it."""


def has_tone(samples: Samples, freq_hz: float, min_level_db: float = PRESENT_DB) -> bool:
    """Is a tone at ``freq_hz`` clearly present (level-based; robust to codec noise)?

    Over the whole window or in most 20 ms frames: a window in which a starved
    test process left every other frame silent spreads the tone's energy into
    sidebands and reads ~6 dB low over the window, though it is plainly there.
    """
    level = max(tone_level_db(samples, freq_hz),
                steady_tone_level_db(samples, freq_hz, percentile=50.0))
    return level >= min_level_db


def lacks_tone(samples: Samples, freq_hz: float, max_level_db: float = ABSENT_DB) -> bool:
    return tone_level_db(samples, freq_hz) < max_level_db


def tone_level_db(samples: Samples, freq_hz: float, half_width_hz: float = 8.0) -> float:
    """Level of the tone at ``freq_hz`` in dBFS (a full-scale sine is about 0 dB).

    Differences between two calls give gain changes (ducking, volume).
    """
    band, _ = _band_power(samples, freq_hz, half_width_hz)
    n = samples.size
    # Parseval: a sine of amplitude A puts about A^2 / 4 * n * sum(w^2) into
    # its positive-frequency band.
    amplitude_sq = 4 * band / (n * float(np.sum(np.hanning(n) ** 2)))
    return 10 * math.log10(amplitude_sq + 1e-30)


def steady_tone_level_db(samples: Samples, freq_hz: float, percentile: float = 90.0) -> float:
    """The tone's amplitude in dBFS when it is there: a high percentile over 20 ms frames.

    For comparing gains (volume, ducking, distance) on a loaded machine. When
    the one test process that runs the server and every peer falls behind,
    the mixer rightly plays a late frame as silence, and a whole-window FFT
    then reads several dB low; the frames that did arrive still carry the
    gain. Each frame's amplitude is a Hann-windowed projection on the tone
    (other test tones, hundreds of Hz away, leak in below -60 dB).
    """
    n = FRAME_SAMPLES
    frames = samples[: samples.size // n * n].astype(np.float64).reshape(-1, n) / FULL_SCALE
    if frames.shape[0] == 0:
        raise ValueError(f"need at least {n} samples, got {samples.size}")
    window = np.hanning(n)
    basis = window * np.exp(-2j * np.pi * freq_hz * np.arange(n) / SAMPLE_RATE_HZ)
    amplitudes = 2 * np.abs(frames @ basis) / window.sum()
    return 20 * math.log10(float(np.percentile(amplitudes, percentile)) + 1e-15)


def assert_mix_minus(peers: Mapping[str, RtcClient], tones_hz: Mapping[str, float],
                     listen_s: float) -> None:
    """Each peer's last ``listen_s`` holds every other peer's tone and never its own."""
    for name, client in peers.items():
        samples = client.recorder.last(listen_s)
        report = describe_tones(samples, list(tones_hz.values()))
        for other, hz in tones_hz.items():
            if other == name:
                assert lacks_tone(samples, hz), f"{name} hears itself: {report}"
            else:
                assert has_tone(samples, hz), f"{name} misses {other}: {report}"


def describe_tones(samples: Samples, freqs: list[float]) -> str:
    """For assertion messages: each frequency's level in dBFS."""
    return ", ".join(f"{f:g} Hz: {tone_level_db(samples, f):.1f} dBFS" for f in freqs)


# --- audio files ----------------------------------------------------------------------


def write_tone_file(
    path: str | os.PathLike[str],
    freq_hz: float = 330.0,
    seconds: float = 5.0,
    amplitude: float = 0.25,
    rate_hz: int = 44_100,
) -> None:
    """Write a stereo sine to ``path``; the suffix picks the format (.wav, .flac, .ogg, .mp3)."""
    import av

    suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
    codec, fmt = {
        "wav": ("pcm_s16le", "wav"),
        "flac": ("flac", "flac"),
        "ogg": ("flac", "ogg"),
        "mp3": ("libmp3lame", "mp3"),
    }[suffix]
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    mono = (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32_767).astype(np.int16)
    with av.open(os.fspath(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate_hz, layout="stereo")
        chunk = 4096
        for start in range(0, mono.size, chunk):
            part = mono[start : start + chunk]
            frame = AudioFrame.from_ndarray(
                np.repeat(part, 2).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = rate_hz
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --- one client peer ------------------------------------------------------------------


class RtcClient:
    """An aiortc participant: sends a tone (and optional music), records the mix."""

    def __init__(
        self,
        name: str,
        tone_hz: float | None = 440.0,
        *,
        amplitude: float = 0.25,
        music_hz: float | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        relay_only: bool = False,
        send: bool = True,
    ) -> None:
        self.name = name
        self.tone = ToneTrack(tone_hz, amplitude)
        self.music = ToneTrack(music_hz, amplitude) if music_hz is not None else None
        self.recorder = Recorder()
        config = RTCConfiguration(
            iceServers=list(ice_servers or []),
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
            ),
        )
        self.pc = RTCPeerConnection(config)
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        if send:
            self.pc.addTrack(self.tone)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self._music_transceiver = (
            self.pc.addTransceiver(self.music, direction="sendonly") if self.music else None
        )

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.recorder._task is None:
            self.recorder.start(track)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()
        elif self.pc.connectionState in ("failed", "closed"):
            self._failed.set()

    @property
    def music_mids(self) -> list[str]:
        t = self._music_transceiver
        return [t.mid] if t is not None and t.mid is not None else []

    async def offer(self) -> str:
        """Create the offer; aiortc gathers every candidate before this returns."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def wait_connected(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Wait for ``connected``; a clear TimeoutError (never a hang) otherwise."""
        _, pending = await asyncio.wait(
            [
                asyncio.ensure_future(self._connected.wait()),
                asyncio.ensure_future(self._failed.wait()),
            ],
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        if not self._connected.is_set():
            raise TimeoutError(
                f"{self.name}: WebRTC connection not established within {timeout_s:g} s "
                f"(connectionState={self.pc.connectionState}, "
                f"iceConnectionState={self.pc.iceConnectionState}); relay-only, this "
                "means the TURN server refused the credentials or is unreachable"
            )

    def vanish(self) -> None:
        """Disappear without a goodbye: stop sending and close the UDP sockets.

        Like a killed process or a phone going out of coverage: no DTLS close,
        no RTCP BYE; the server only notices that packets stop.
        """
        self.tone.stop()
        if self.music is not None:
            self.music.stop()
        for transceiver in self.pc.getTransceivers():
            aiortc_compat.go_silent(transceiver.receiver.transport.transport)

    async def close(self) -> None:
        await self.recorder.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


async def join(
    room: Any,
    client: RtcClient,
    participant_id: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> RtcClient:
    """Connect ``client`` to a ``sfu.room.MediaRoom`` directly (no signaling).

    Every step is bounded by ``timeout_s``: a dead TURN server or wrong TURN
    credentials end in a TimeoutError that says so, never a hang.
    """
    try:
        offer = await asyncio.wait_for(client.offer(), timeout_s)
    except TimeoutError:
        raise TimeoutError(
            f"{client.name}: gathering ICE candidates took over {timeout_s:g} s; "
            "is the TURN/STUN server reachable?"
        ) from None
    answer = await room.connect(participant_id or client.name, offer, client.music_mids)
    await client.accept(answer)
    await client.wait_connected(timeout_s)
    return client


# --- coturn ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Coturn:
    port: int
    secret: str
    realm: str

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def ice_server(self, username: str, credential: str) -> RTCIceServer:
        return RTCIceServer(urls=self.url, username=username, credential=credential)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


@contextlib.asynccontextmanager
async def coturn(binary: str, secret: str | None = None) -> AsyncIterator[Coturn]:
    """A real coturn on 127.0.0.1 with REST-API auth (``use-auth-secret``)."""
    port = free_port()
    relay_min = random.randrange(40_000, 60_000, 100)
    secret = secret or secrets.token_hex(16)
    realm = "disco.test"
    log_dir = tempfile.mkdtemp(prefix="coturn-")
    log_file = os.path.join(log_dir, "turn.log")
    args = [
        binary,
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={relay_min}",
        f"--max-port={relay_min + 99}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        f"--realm={realm}",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--fingerprint",
        f"--log-file={log_file}",
        "--simple-log",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not _tcp_open(port):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start; see {log_dir}")
            await asyncio.sleep(0.05)
        yield Coturn(port=port, secret=secret, realm=realm)
    finally:
        await stop_process(proc)
        shutil.rmtree(log_dir, ignore_errors=True)


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it holds, or fail saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)
