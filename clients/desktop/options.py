"""What a run is asked to do (filled from the command line), and the reconnect backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from clients.desktop.devices import DeviceSpec

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
BACKOFF_JITTER = 0.2


@dataclass
class Options:
    """Everything the command line decides (see ``cli.build_parser``)."""

    server: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    guest: str | None = None
    group: str | None = None
    nearby: bool = False
    lat: float | None = None
    lon: float | None = None
    radius_m: float = 500.0
    accuracy_m: float = 10.0
    gpx: Path | None = None
    gpx_speed: float = 1.0
    input_device: DeviceSpec = None
    output_device: DeviceSpec = None
    device_rate_hz: int | None = None
    input_file: Path | None = None
    output_file: Path | None = None
    no_input: bool = False
    no_output: bool = False
    loop_input: bool = False
    duration_s: float | None = None
    music: Path | None = None
    echo_guard: bool = False
    push_to_talk: bool = False
    muted: bool = False
    commands: bool | None = None
    """Read line commands from stdin; None: only when stdin is a terminal."""
    max_backoff_s: float = BACKOFF_MAX_S


def backoff_s(
    attempt: int, max_s: float = BACKOFF_MAX_S, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter: 0.5, 1, 2, 4, 8, 8, ... seconds (+-20%)."""
    base = min(max_s, BACKOFF_FIRST_S * (2 ** min(attempt, 16)))
    jitter = (rng or random).uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
    return max(0.05, base * (1 + jitter))
