"""Audio levels (dBov) for every participant at once, and speaking detection.

aiortc computes a level per encoded frame in pure Python (213 us a frame, see
docs/architecture.md); here one vectorised call measures all of a room's frames for the
tick. ``SpeakingDetector`` turns levels into a per-participant state with
hysteresis (a higher threshold to start than to stop, plus a hangover so the
pauses between words do not toggle it) and into ``speaking`` /
``stopped_speaking`` events rate-limited per participant.

The state doubles as the mixer's gate: only active speakers enter mixes, which
is what lets all non-speakers share one encode. The gate opens on the first
frame above the start threshold, so no onset is clipped; it closes only after
the hangover, so word endings are not either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FULL_SCALE = 32_768.0
MIN_DBOV = -127.0
"""RFC 6464's floor: digital silence reports -127 dBov."""

START_DBOV = -50.0
STOP_DBOV = -60.0
HANGOVER_S = 0.5
MIN_EVENT_INTERVAL_S = 0.3
"""At most ~3 speaking/stopped_speaking events per second per participant."""


def levels_dbov(frames: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """RMS level in dBov of each row of a (participants, samples) int16 array."""
    if frames.ndim == 1:
        frames = frames.reshape(1, -1)
    x = frames.astype(np.float32)
    mean_square = np.einsum("ij,ij->i", x, x, dtype=np.float64) / max(frames.shape[1], 1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(mean_square / (FULL_SCALE * FULL_SCALE))
    return np.maximum(db, MIN_DBOV)


@dataclass
class _State:
    active: bool = False
    reported: bool = False
    last_loud: float = float("-inf")
    last_event: float = float("-inf")


@dataclass
class SpeakingDetector:
    """Speaking state with hysteresis and rate-limited events (pure; time passed in)."""

    start_dbov: float = START_DBOV
    stop_dbov: float = STOP_DBOV
    hangover_s: float = HANGOVER_S
    min_event_interval_s: float = MIN_EVENT_INTERVAL_S
    _states: dict[str, _State] = field(default_factory=dict)

    def update(self, now: float, levels: Mapping[str, float]) -> list[dict[str, Any]]:
        """Feed this tick's levels; participants missing from ``levels`` are silent.

        Returns the wire events to send (``speaking`` / ``stopped_speaking``).
        """
        events: list[dict[str, Any]] = []
        for pid in levels.keys() - self._states.keys():
            self._states[pid] = _State()
        for pid, st in self._states.items():
            level = levels.get(pid, MIN_DBOV)
            if level >= self.start_dbov:
                st.active = True
                st.last_loud = now
            elif level >= self.stop_dbov and st.active:
                st.last_loud = now  # still above the lower threshold: keep going
            elif st.active and now - st.last_loud >= self.hangover_s:
                st.active = False
            if st.active != st.reported and now - st.last_event >= self.min_event_interval_s:
                st.reported = st.active
                st.last_event = now
                kind = "speaking" if st.active else "stopped_speaking"
                events.append({"type": kind, "participant_id": pid})
        return events

    def active(self) -> set[str]:
        """Participants whose gate is open (the mixer uses this, not the events)."""
        return {pid for pid, st in self._states.items() if st.active}

    def reported(self) -> set[str]:
        """Participants the events last called speaking: the snapshot for a late joiner.

        Not ``active()``: while an event is held back by the rate limit the two
        differ, and a joiner told the gate's state could miss the only event
        that would correct it (the gate may swing back before the limit ends).
        """
        return {pid for pid, st in self._states.items() if st.reported}

    def is_active(self, pid: str) -> bool:
        st = self._states.get(pid)
        return st is not None and st.active

    def forget(self, pids: Iterable[str]) -> list[dict[str, Any]]:
        """Drop participants; a reported speaker gets a final ``stopped_speaking``."""
        events = []
        for pid in pids:
            st = self._states.pop(pid, None)
            if st is not None and st.reported:
                events.append({"type": "stopped_speaking", "participant_id": pid})
        return events
