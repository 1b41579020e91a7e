"""Music ducking: a per-sample gain ramp, so music dips while anyone talks.

A gain that jumps between frames multiplies the waveform by a step, which is
heard as a click. ``GainRamp`` moves its gain linearly, sample by sample, and
never by more than a fixed step per sample, so a change of -12 dB spreads over
tens of milliseconds. Ducking down is fast (the voice must be understood from
its first word); coming back up is slow (music swelling between words is
distracting). Pure: the caller says what the target is each tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Acc, Pcm

DUCK_DB = -12.0
ATTACK_S = 0.05
"""Time for a full ramp from 1.0 down to the ducked gain."""
RELEASE_S = 0.4
"""Time for a full ramp from the ducked gain back up to 1.0."""
FADE_S = FRAME_SAMPLES / SAMPLE_RATE_HZ
"""Music fades in and out over one frame on play, pause and stop."""

Gains = npt.NDArray[np.float32]


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def ramp(start: float, end: float, samples: int = FRAME_SAMPLES) -> Gains:
    """Per-sample gains moving linearly from ``start`` to reach ``end`` at the last sample."""
    return np.linspace(start, end, samples + 1, dtype=np.float32)[1:]


@dataclass
class GainRamp:
    """A gain that follows a target at a bounded rate, one frame at a time."""

    down_step: float
    """Largest decrease per sample."""
    up_step: float
    """Largest increase per sample."""
    gain: float = 1.0

    def next_frame(self, target: float, samples: int = FRAME_SAMPLES) -> Gains:
        """The per-sample gains for the next frame, moving toward ``target``."""
        start = self.gain
        if target == start:
            return np.full(samples, start, dtype=np.float32)
        step = self.down_step if target < start else self.up_step
        n = np.arange(1, samples + 1, dtype=np.float64)
        if target < start:
            g = np.maximum(start - step * n, target)
        else:
            g = np.minimum(start + step * n, target)
        self.gain = float(g[-1])
        return g.astype(np.float32)


@dataclass
class Ducker:
    """The music gain: 1.0 when nobody talks, ``duck_db`` while anyone does."""

    duck_db: float = DUCK_DB
    attack_s: float = ATTACK_S
    release_s: float = RELEASE_S
    _ramp: GainRamp = field(init=False)

    def __post_init__(self) -> None:
        span = 1.0 - self.ducked_gain
        self._ramp = GainRamp(
            down_step=max(span, 1e-6) / (self.attack_s * SAMPLE_RATE_HZ),
            up_step=max(span, 1e-6) / (self.release_s * SAMPLE_RATE_HZ),
        )

    @property
    def ducked_gain(self) -> float:
        return db_to_gain(min(self.duck_db, 0.0))

    @property
    def gain(self) -> float:
        return self._ramp.gain

    @property
    def max_step(self) -> float:
        """The largest per-sample change this ducker ever makes."""
        return max(self._ramp.down_step, self._ramp.up_step)

    def gains(self, anyone_speaking: bool) -> Gains:
        return self._ramp.next_frame(self.ducked_gain if anyone_speaking else 1.0)

    def apply(self, bed: Acc, anyone_speaking: bool) -> Acc:
        """The music bed with this frame's ducking applied (int32, not clipped)."""
        g = self.gains(anyone_speaking)
        if g[0] == 1.0 and g[-1] == 1.0:
            return bed
        return np.rint(bed.astype(np.float32) * g).astype(np.int32)


def fade(frame: Pcm, start: float, end: float) -> Pcm:
    """``frame`` under a linear fade (fade-in 0->1 on play, 1->0 on pause/stop)."""
    g = ramp(start, end, frame.shape[0])
    return np.rint(frame.astype(np.float32) * g).astype(np.int16)
