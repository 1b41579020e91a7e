"""Loss-driven encoder settings and connection quality, from RTCP reports (pure).

Inputs are what RTCP receiver reports carry (RFC 3550 6.4.1): *fraction
lost*, an 8-bit fixed-point share of the packets lost since the previous
report (0..255, /256), interarrival jitter and, from the report's LSR/DLSR,
round-trip time. Time comes in as ``now`` (seconds, monotonic). Nothing
here touches an encoder or a socket; ``apply`` pushes settings into anything
with the ``protocol.opus.Encoder`` setters.

Encoder side. One encoder feeds every listener whose mix is identical, so it
must protect the worst of them: ``LossReports`` keeps each listener's highest
loss over the last ``REPORT_WINDOW_S`` and ``FecController`` (one per shared
encoder) turns the worst of its listeners into ``EncoderSettings``:

* FEC switches on at ``FEC_ON_LOSS_PERC`` and off only after the loss stayed
  under ``FEC_OFF_LOSS_PERC`` for ``FEC_OFF_HOLD_S`` (hysteresis: no flapping
  on one noisy report).
* The expected loss handed to libopus is the measured one rounded up to
  ``LOSS_PERC_STEP`` points, at least ``LOSS_PERC_FLOOR`` while FEC is on
  (below that libopus gives LBRR too few bits to help), at most
  ``LOSS_PERC_MAX``; it rises at once and falls only after ``LOSS_DOWN_HOLD_S``.
* With FEC on the bitrate rises by ``FEC_EXTRA_BPS``: LBRR takes its bits from
  the primary encoding, which would otherwise sound worse for everyone.

``RedController`` decides per listener (who offered ``red/48000/2``) whether
their loss calls for RED, with the same kind of hysteresis.

Quality side: ``quality_score`` is a simplified E-model as LiveKit scores a
connection (its ``connectionquality/scorer.go``): 100 minus a delay effect
(half the RTT plus twice the jitter; /40 per ms up to 160 ms, steeper above)
minus the loss percentage times a codec weight (8 for Opus, less with FEC or
RED, which repair loss). ``QualityTracker`` smooths the score (falls fast,
recovers slowly) and reports excellent (> 80), good (> 40) or poor, only
when the class changes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

FRACTION_LOST_SCALE = 256
"""RFC 3550: fraction lost is loss * 256, truncated, 0..255."""

REPORT_WINDOW_S = 5.0
"""A listener's loss is the highest reported in the last 5 s (RRs come every 1-5 s)."""
FEC_ON_LOSS_PERC = 2.0
FEC_OFF_LOSS_PERC = 1.0
FEC_OFF_HOLD_S = 10.0
LOSS_PERC_FLOOR = 5
LOSS_PERC_MAX = 30
LOSS_PERC_STEP = 5
LOSS_DOWN_HOLD_S = 5.0
DEFAULT_BITRATE_BPS = 32_000
FEC_EXTRA_BPS = 16_000
"""32 kbps voice + 16 kbps for LBRR. Measured (tests/voice_pipeline, 10 % loss each way,
wideband PESQ, 3 seeds): FEC at 32 kbps 2.34, at 40 kbps 2.44, at 48 kbps 2.70."""

RED_ON_LOSS_PERC = 5.0
RED_OFF_LOSS_PERC = 2.0
RED_OFF_HOLD_S = 10.0

OPUS_LOSS_WEIGHT = 8.0
"""Score points per percent lost: 2.5 % loss drops Opus to good, 7.5 % to poor."""
FEC_WEIGHT_DIVISOR = 1.5
RED_LOSS_WEIGHT = 4.0
EXCELLENT_ABOVE = 80.0
GOOD_ABOVE = 40.0
SCORE_FALL_FACTOR = 0.7
"""A worse score moves 70 % of the way at once..."""
SCORE_RISE_FACTOR = 0.4
"""...a better one only 40 % per update: quality recovers conservatively."""


def loss_perc(fraction_lost: int) -> float:
    """RTCP fraction lost (0..255) as a percentage."""
    if not 0 <= fraction_lost <= 255:
        raise ValueError(f"fraction lost is 8-bit (0..255), got {fraction_lost}")
    return fraction_lost * 100.0 / FRACTION_LOST_SCALE


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    fec: bool
    packet_loss_perc: int
    bitrate_bps: int


class TunableEncoder(Protocol):
    def set_fec(self, on: bool) -> None: ...
    def set_packet_loss_perc(self, percent: int) -> None: ...
    def set_bitrate(self, bitrate_bps: int) -> None: ...


def apply(encoder: TunableEncoder, new: EncoderSettings, old: EncoderSettings | None) -> None:
    """Set what changed between ``old`` and ``new`` on a live encoder (ctls, no reset)."""
    if old is None or new.fec != old.fec:
        encoder.set_fec(new.fec)
    if old is None or new.packet_loss_perc != old.packet_loss_perc:
        encoder.set_packet_loss_perc(new.packet_loss_perc)
    if old is None or new.bitrate_bps != old.bitrate_bps:
        encoder.set_bitrate(new.bitrate_bps)


class LossReports:
    """Each listener's recent RTCP loss; the worst over any group of them."""

    def __init__(self, window_s: float = REPORT_WINDOW_S) -> None:
        self._window_s = window_s
        self._reports: dict[str, list[tuple[float, float]]] = {}

    def report(self, listener: str, fraction_lost: int, now: float) -> None:
        """One receiver report block about our stream to ``listener``."""
        perc = loss_perc(fraction_lost)
        kept = [(t, p) for t, p in self._reports.get(listener, ()) if now - t < self._window_s]
        kept.append((now, perc))
        self._reports[listener] = kept

    def forget(self, listener: str) -> None:
        self._reports.pop(listener, None)

    def loss(self, listener: str, now: float) -> float:
        """Highest loss % reported by ``listener`` in the window (0 with no recent report)."""
        return max((p for t, p in self._reports.get(listener, ()) if now - t < self._window_s),
                   default=0.0)

    def worst(self, listeners: Iterable[str], now: float) -> float:
        return max((self.loss(name, now) for name in listeners), default=0.0)


class FecController:
    """One shared encoder's FEC, expected loss and bitrate, with hysteresis."""

    def __init__(self, base_bitrate_bps: int = DEFAULT_BITRATE_BPS) -> None:
        self._base = base_bitrate_bps
        self._fec = False
        self._perc = 0
        self._quiet_since: float | None = None
        """When the loss last went under FEC_OFF_LOSS_PERC (None: it is not under)."""
        self._lower_since: float | None = None
        self.settings = EncoderSettings(False, 0, base_bitrate_bps)

    def update(self, worst_loss_perc: float, now: float) -> EncoderSettings:
        """The settings for the worst current loss of this encoder's listeners."""
        loss = max(0.0, worst_loss_perc)
        if loss >= FEC_ON_LOSS_PERC:
            self._fec = True
        if loss < FEC_OFF_LOSS_PERC:
            if self._quiet_since is None:
                self._quiet_since = now
            elif self._fec and now - self._quiet_since >= FEC_OFF_HOLD_S:
                self._fec = False
        else:
            self._quiet_since = None

        wanted = 0
        if self._fec:
            stepped = LOSS_PERC_STEP * math.ceil(loss / LOSS_PERC_STEP)
            wanted = max(LOSS_PERC_FLOOR, min(LOSS_PERC_MAX, stepped))
        if wanted >= self._perc or not self._fec:
            self._perc = wanted
            self._lower_since = None
        elif self._lower_since is None:
            self._lower_since = now
        elif now - self._lower_since >= LOSS_DOWN_HOLD_S:
            self._perc = wanted
            self._lower_since = None

        bitrate = self._base + (FEC_EXTRA_BPS if self._fec else 0)
        self.settings = EncoderSettings(self._fec, self._perc, bitrate)
        return self.settings


class RedController:
    """Whether one listener (who offered RED) should get it, with hysteresis."""

    def __init__(self) -> None:
        self.on = False
        self._quiet_since: float | None = None

    def update(self, loss: float, now: float) -> bool:
        if loss >= RED_ON_LOSS_PERC:
            self.on = True
        if loss < RED_OFF_LOSS_PERC:
            if self._quiet_since is None:
                self._quiet_since = now
            elif self.on and now - self._quiet_since >= RED_OFF_HOLD_S:
                self.on = False
        else:
            self._quiet_since = None
        return self.on


class Quality(enum.StrEnum):
    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"


def quality_score(loss: float, jitter_ms: float, rtt_ms: float, *, fec: bool = False,
                  red: bool = False) -> float:
    """0..100 from loss %, jitter and RTT (simplified E-model, LiveKit's weights)."""
    delay_ms = max(0.0, rtt_ms) / 2.0 + 2.0 * max(0.0, jitter_ms)
    delay_effect = delay_ms / 40.0 if delay_ms <= 160.0 else (delay_ms - 120.0) / 10.0
    weight = RED_LOSS_WEIGHT if red else OPUS_LOSS_WEIGHT
    if fec:
        weight /= FEC_WEIGHT_DIVISOR
    return max(0.0, min(100.0, 100.0 - delay_effect - max(0.0, loss) * weight))


def classify(score: float) -> Quality:
    if score > EXCELLENT_ABOVE:
        return Quality.EXCELLENT
    if score > GOOD_ABOVE:
        return Quality.GOOD
    return Quality.POOR


class QualityTracker:
    """One participant's connection quality; says so only when the class changes."""

    def __init__(self) -> None:
        self.score = 100.0
        self.quality = Quality.EXCELLENT

    def update(self, loss: float, jitter_ms: float, rtt_ms: float, *, fec: bool = False,
               red: bool = False) -> Quality | None:
        """Fold in one report; returns the new class if it changed, else None."""
        raw = quality_score(loss, jitter_ms, rtt_ms, fec=fec, red=red)
        factor = SCORE_FALL_FACTOR if raw < self.score else SCORE_RISE_FACTOR
        self.score = factor * raw + (1.0 - factor) * self.score
        quality = classify(self.score)
        if quality is self.quality:
            return None
        self.quality = quality
        return quality
