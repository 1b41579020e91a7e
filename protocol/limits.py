"""The ranges the protocol accepts: the one place each bound is defined.

The wire schema (``protocol.wire``), the server's validators (location fixes,
the proximity index, the mixer's gains) and the clients all read these, so a
bound cannot differ between the edge that checks it and the code that uses it.
"""

from __future__ import annotations

# Nearby hearing radius
RADIUS_MIN_M = 100.0
RADIUS_MAX_M = 2_000.0

# Per-listener volume of one speaker (1.0 = as sent)
GAIN_MAX = 2.0

# Location fixes (OwnTracks-like)
LAT_MIN_DEG, LAT_MAX_DEG = -90.0, 90.0
LON_MIN_DEG, LON_MAX_DEG = -180.0, 180.0
ACCURACY_MAX_M = 100_000.0  # coarser than this is not a location (cell-tower guesses are ~5 km)
SPEED_MAX_MPS = 350.0  # airliner speed; faster is a bug, not a journey
HEADING_MIN_DEG, HEADING_MAX_DEG = 0.0, 360.0  # [0, 360)
BATTERY_MIN_PCT, BATTERY_MAX_PCT = 0.0, 100.0
