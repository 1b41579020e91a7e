"""Speech made by the test (espeak-ng), wideband PESQ, and a count of holes.

``speech()`` synthesises a few sentences with espeak-ng (Debian package
``espeak-ng``; missing -> skip with a reason, a failure in CI) and returns
48 kHz mono int16, what Disco's media plane carries. ``pesq_wb`` scores a
degraded copy against it with ITU-T P.862.2 (``pesq`` on PyPI), after
resampling both to 16 kHz. ``holes`` counts the gaps a listener hears: runs
of 20 ms frames that are silent in the output where the reference speaks.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import av
import numpy as np
import numpy.typing as npt

from tests.services import missing

SAMPLE_RATE_HZ = 48_000
PESQ_RATE_HZ = 16_000
FRAME_SAMPLES = 960
TEXT = (
    "The ridge trail turns left after the second bridge. "
    "Wait for me at the hut, I will be there in ten minutes. "
    "Can you hear me clearly now? The wind is picking up over the pass. "
    "Seven riders are ahead of us, and two are still behind."
)
SPEECH_LEVEL_DBFS = -20.0
"""RMS level the synthetic speech is normalised to (a normal talker)."""
HOLE_RATIO_DB = -30.0
"""An output frame this far under the reference frame's energy is a hole."""
SPEECH_FRAME_DBFS = -45.0
"""Reference frames quieter than this are pauses, not speech."""
HOLE_BLOCK_FRAMES = 50
"""Holes are looked for one second at a time..."""
HOLE_SEARCH_FRAMES = 6
"""...each second aligned within +-120 ms of the overall delay."""

Pcm = npt.NDArray[np.int16]


def resample(pcm: npt.NDArray[np.int16], from_hz: int, to_hz: int) -> Pcm:
    """Mono int16 resampling with FFmpeg's swresample (through PyAV)."""
    if from_hz == to_hz:
        return pcm.astype(np.int16, copy=True)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = from_hz
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_hz)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16)


@functools.cache
def _synthesise(text: str, voice: str, words_per_minute: int) -> bytes:
    binary = shutil.which("espeak-ng")
    if binary is None:
        return b""
    result = subprocess.run([binary, "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                            capture_output=True, check=True, timeout=60)
    return result.stdout


def speech(text: str = TEXT, voice: str = "en-us", words_per_minute: int = 160) -> Pcm:
    """Synthetic speech at 48 kHz, whole 20 ms frames, ~-20 dBFS; skips without espeak-ng."""
    wav_bytes = _synthesise(text, voice, words_per_minute)
    if not wav_bytes:
        missing("espeak-ng (Debian package espeak-ng) not installed")
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert width == 2 and channels == 1, (width, channels)
    pcm = resample(raw, rate, SAMPLE_RATE_HZ).astype(np.float64)
    rms = float(np.sqrt(np.mean(pcm**2))) or 1.0
    pcm *= 32768.0 * 10 ** (SPEECH_LEVEL_DBFS / 20) / rms
    frames = pcm.shape[0] // FRAME_SAMPLES
    return np.clip(pcm[: frames * FRAME_SAMPLES], -32768, 32767).astype(np.int16)


def align(reference: Pcm, degraded: Pcm, max_lag_samples: int = SAMPLE_RATE_HZ // 2) -> Pcm:
    """``degraded`` shifted by its overall delay and cut/padded to ``reference``'s length."""
    n = 1 << int(np.ceil(np.log2(reference.shape[0] + degraded.shape[0])))
    a = np.fft.rfft(reference.astype(np.float64), n)
    b = np.fft.rfft(degraded.astype(np.float64), n)
    xc = np.fft.irfft(np.conj(a) * b, n)
    lags = np.concatenate((xc[: max_lag_samples + 1], xc[-max_lag_samples:]))
    idx = int(np.argmax(lags))
    lag = idx if idx <= max_lag_samples else idx - lags.shape[0]
    shifted = degraded[lag:] if lag >= 0 else np.concatenate(
        (np.zeros(-lag, dtype=np.int16), degraded))
    out = np.zeros(reference.shape[0], dtype=np.int16)
    m = min(out.shape[0], shifted.shape[0])
    out[:m] = shifted[:m]
    return out


def pesq_wb(reference: Pcm, degraded: Pcm) -> float:
    """Wideband PESQ MOS-LQO (P.862.2) of 48 kHz ``degraded`` against ``reference``."""
    from pesq import pesq  # test extra

    ref16 = resample(reference, SAMPLE_RATE_HZ, PESQ_RATE_HZ).astype(np.float32)
    deg16 = resample(align(reference, degraded), SAMPLE_RATE_HZ, PESQ_RATE_HZ)
    m = min(ref16.shape[0], deg16.shape[0])
    return float(pesq(PESQ_RATE_HZ, ref16[:m], deg16[:m].astype(np.float32), "wb"))


def _frame_dbfs(pcm: Pcm) -> npt.NDArray[np.float64]:
    frames = pcm[: pcm.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES].astype(np.float64)
    power = np.mean(frames.reshape(-1, FRAME_SAMPLES) ** 2, axis=1)
    return np.asarray(10 * np.log10(power / 32768.0**2 + 1e-12))


def holes(reference: Pcm, degraded: Pcm) -> int:
    """Runs of 20 ms frames that are (near) silent in ``degraded`` while ``reference`` speaks.

    The delay may change along the way (a jitter buffer grows or sheds a frame),
    so each second is aligned on its own, within ``HOLE_SEARCH_FRAMES`` of the
    overall delay, before frames are compared.
    """
    ref = _frame_dbfs(reference)
    deg = _frame_dbfs(align(reference, degraded))
    n = ref.shape[0]
    padded = np.concatenate((np.full(HOLE_SEARCH_FRAMES, -120.0), deg,
                             np.full(HOLE_SEARCH_FRAMES, -120.0)))
    gap = np.zeros(n, dtype=bool)
    for start in range(0, n, HOLE_BLOCK_FRAMES):
        block = slice(start, min(n, start + HOLE_BLOCK_FRAMES))
        r = ref[block]
        best = None
        for shift in range(-HOLE_SEARCH_FRAMES, HOLE_SEARCH_FRAMES + 1):
            lo = start + HOLE_SEARCH_FRAMES + shift
            d = padded[lo : lo + r.shape[0]]
            mask = (r > SPEECH_FRAME_DBFS) & (d < r + HOLE_RATIO_DB)
            if best is None or mask.sum() < best.sum():
                best = mask
        assert best is not None
        gap[block] = best
    return int(np.sum(gap[1:] & ~gap[:-1]) + int(gap[0])) if n else 0
