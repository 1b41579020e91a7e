"""How many log records of a kind a client may cause: a token bucket. Pure.

A client that can make the server log (a traceback per malformed message, a
warning per refused request) must not be able to grow the log without
bound. ``LogBudget`` lets a burst through, then one record per
``interval_s``; what it drops is counted, and the next record allowed reports
the count, so nothing is hidden, only summarised. Time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class LogBudget:
    burst: int
    interval_s: float
    _tokens: float = field(init=False)
    _at: float | None = field(init=False, default=None)
    suppressed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.burst < 1 or not self.interval_s > 0:
            raise ValueError("burst must be >= 1 and interval_s > 0")
        self._tokens = float(self.burst)

    def allow(self, now: float) -> int | None:
        """None to drop this record; else how many were dropped since the last one allowed."""
        if self._at is not None and now > self._at:
            self._tokens = min(float(self.burst),
                               self._tokens + (now - self._at) / self.interval_s)
        self._at = now if self._at is None else max(self._at, now)
        if self._tokens < 1.0:
            self.suppressed += 1
            return None
        self._tokens -= 1.0
        dropped, self.suppressed = self.suppressed, 0
        return dropped
