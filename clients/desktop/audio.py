"""Audio logic with no I/O: bounded buffers, format conversion, mic gating, echo guard.

Everything the client sends or plays is mono int16 at 48 kHz in 20 ms frames
(what Opus and the server's mixer use). Devices and files at other rates or
with several channels are converted at the edge with ``Resampler``.

Buffers never grow: a sound card's clock and the network's 20 ms clock drift
apart, and a buffer that only grows turns that drift into ever-growing delay.
``SampleBuffer`` drops the *oldest* samples when full (fresh audio matters more
than complete audio in a conversation), and ``PlayoutBuffer`` adds a small
prefill after each underrun so playback does not stutter frame by frame.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
FULL_SCALE = 32_768.0
SILENCE_DBFS = -120.0

CAPTURE_MAX_MS = 120
"""Mic audio waiting to be sent; older samples are dropped beyond this."""
CAPTURE_PREFILL_MS = 40
"""After the mic buffer runs dry, wait for this much before sending mic audio again."""
PLAYOUT_MAX_MS = 200
"""Received audio waiting for the speaker; older samples are dropped beyond this."""
PLAYOUT_PREFILL_MS = 40
"""After running dry, playback waits for this much audio before resuming."""

Pcm = npt.NDArray[np.int16]


def ms_to_samples(ms: float, rate_hz: int = SAMPLE_RATE_HZ) -> int:
    return round(ms * rate_hz / 1000)


def silence(samples: int = FRAME_SAMPLES) -> Pcm:
    return np.zeros(samples, dtype=np.int16)


def level_dbfs(pcm: Pcm) -> float:
    """RMS level of ``pcm`` in dBFS (full-scale sine is about -3 dBFS)."""
    if pcm.size == 0:
        return SILENCE_DBFS
    x = pcm.astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / x.size)
    if rms <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20 * math.log10(rms / FULL_SCALE))


def scale(pcm: Pcm, gain: float) -> Pcm:
    """``pcm`` times ``gain``, clipped to int16 (gain 1 returns the input itself)."""
    if gain == 1.0:
        return pcm
    if gain == 0.0:
        return np.zeros_like(pcm)
    return np.clip(pcm.astype(np.float32) * gain, -32768, 32767).astype(np.int16)


def to_mono(samples: npt.NDArray[np.generic]) -> Pcm:
    """Mono int16 from int16 or float samples shaped (n,) or (n, channels)."""
    arr = np.asarray(samples)
    if arr.dtype.kind == "f":
        arr = np.clip(arr * 32767.0, -32768, 32767)
    if arr.ndim == 2:
        arr = arr.astype(np.int32).mean(axis=1) if arr.shape[1] > 1 else arr[:, 0]
    return arr.astype(np.int16, copy=False).reshape(-1)


class SampleBuffer:
    """A thread-safe FIFO of mono int16 samples that drops its oldest when full.

    Thread-safe because a PortAudio callback thread fills or drains it while
    the asyncio side does the other half.
    """

    def __init__(self, max_samples: int) -> None:
        if max_samples <= 0:
            raise ValueError("max_samples must be positive")
        self.max_samples = max_samples
        self._pcm = np.zeros(0, dtype=np.int16)
        self._lock = threading.Lock()
        self.dropped_samples = 0

    def push(self, samples: Pcm) -> None:
        with self._lock:
            data = np.concatenate((self._pcm, samples)) if self._pcm.size else samples.copy()
            excess = data.size - self.max_samples
            if excess > 0:
                self.dropped_samples += excess
                data = data[excess:]
            self._pcm = data

    def pop(self, n: int) -> Pcm | None:
        """Exactly ``n`` samples, or None (and nothing taken) if fewer are buffered."""
        with self._lock:
            if self._pcm.size < n:
                return None
            out, self._pcm = self._pcm[:n], self._pcm[n:]
            return out

    def pop_all(self) -> Pcm:
        """Everything buffered (possibly nothing)."""
        with self._lock:
            out, self._pcm = self._pcm, np.zeros(0, dtype=np.int16)
            return out

    def clear(self) -> None:
        with self._lock:
            self._pcm = np.zeros(0, dtype=np.int16)

    def __len__(self) -> int:
        return int(self._pcm.size)


class PlayoutBuffer(SampleBuffer):
    """What the speaker plays: always answers ``read(n)``, with silence when dry.

    After an underrun it waits for ``prefill`` samples before playing again,
    so a late packet costs one short gap instead of a train of clicks.
    """

    def __init__(self, max_samples: int, prefill: int) -> None:
        super().__init__(max_samples)
        self.prefill = min(prefill, max_samples)
        self._playing = False
        self.underruns = 0

    def read(self, n: int) -> Pcm:
        with self._lock:
            available = self._pcm.size
            if not self._playing and available >= max(self.prefill, 1):
                self._playing = True
            if self._playing and available >= n:
                out, self._pcm = self._pcm[:n], self._pcm[n:]
                return out
            if self._playing:
                self._playing = False
                self.underruns += 1
            return np.zeros(n, dtype=np.int16)


class Resampler:
    """Mono int16 from ``in_rate`` to ``out_rate`` (libswresample via PyAV), streaming.

    Keeps filter state between calls, so a signal converted in pieces sounds
    the same as converted at once. Same rates: a pass-through.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=self.out_rate)
            if self.in_rate != self.out_rate
            else None
        )
        self._pts = 0

    def convert(self, samples: Pcm) -> Pcm:
        if self._resampler is None or samples.size == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16",
            layout="mono",
        )
        frame.sample_rate = self.in_rate
        frame.pts = self._pts
        self._pts += samples.size
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(out).astype(np.int16, copy=False)


class FrameConverter:
    """Any decoded ``av.AudioFrame`` (any format, layout, rate) as mono int16 48 kHz."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)

    def convert(self, frame: av.AudioFrame | None) -> Pcm:
        """``None`` flushes the resampler's tail (end of a file)."""
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(out).astype(np.int16, copy=False)


@dataclass
class MicControl:
    """Whether the microphone is on air: mute and push-to-talk (pure state).

    Muted or off air, the client still *sends* 20 ms frames (of silence): the
    server drops a peer whose audio stops, and silence costs a few bytes.
    """

    muted: bool = False
    push_to_talk: bool = False
    talking: bool = False

    @property
    def on_air(self) -> bool:
        return not self.muted and (not self.push_to_talk or self.talking)

    def toggle_mute(self) -> bool:
        self.muted = not self.muted
        return self.muted

    def toggle_push_to_talk(self) -> bool:
        self.push_to_talk = not self.push_to_talk
        self.talking = False
        return self.push_to_talk

    def toggle_talk(self) -> bool:
        self.talking = not self.talking
        return self.talking


ECHO_THRESHOLD_DBFS = -45.0
"""A received mix louder than this is assumed to be coming back through the mic."""
ECHO_DUCK_GAIN = 0.05
"""Mic gain while ducked (-26 dB): a near-mute, but loud speech still gets through a bit."""
ECHO_HOLD_S = 0.35
"""Keep ducking this long after the mix goes quiet: playout delay plus the room's tail."""
ECHO_RAMP_S = 0.05
"""Gain changes glide over this long, so ducking does not click."""


@dataclass
class EchoGuard:
    """Half-duplex ducking: while the received mix is loud, the mic is turned down.

    A crude echo suppressor for open speakers (headphones are the real fix):
    whatever the speaker plays, the mic hears again, and without this the
    others would hear themselves back. The cost is that you cannot talk over
    someone. Time is passed in (``now``, seconds), so it is testable without
    a clock.
    """

    threshold_dbfs: float = ECHO_THRESHOLD_DBFS
    duck_gain: float = ECHO_DUCK_GAIN
    hold_s: float = ECHO_HOLD_S
    ramp_s: float = ECHO_RAMP_S
    _loud_until: float = float("-inf")
    _gain: float = 1.0
    _last: float | None = None

    def note_playback(self, pcm: Pcm, now: float) -> None:
        """Call with each frame of received audio."""
        if level_dbfs(pcm) > self.threshold_dbfs:
            self._loud_until = now + self.hold_s

    @property
    def ducking(self) -> bool:
        return self._gain < 1.0

    def apply(self, mic: Pcm, now: float) -> Pcm:
        target = self.duck_gain if now < self._loud_until else 1.0
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        step = (1.0 - self.duck_gain) * (dt / self.ramp_s if self.ramp_s > 0 else 1.0)
        if self._gain < target:
            self._gain = min(target, self._gain + step)
        elif self._gain > target:
            self._gain = max(target, self._gain - step)
        return scale(mic, self._gain)
