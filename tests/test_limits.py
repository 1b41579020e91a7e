"""One rule per input: the wire schema and the server's validators share ``protocol.limits``."""

from __future__ import annotations

import json

import pytest

from common.errors import BadRequest
from groups.location.fixes import parse_fix
from groups.nearby.proximity import ProximityIndex
from protocol import limits, wire
from sfu.mixer import MixPlan

NOW = 1_700_000_000.0


def _wire_accepts(**fields: float) -> bool:
    message = {"type": "location", "lat": 1.0, "lon": 2.0, "accuracy_m": 5.0, **fields}
    try:
        wire.parse_client_message(json.dumps(message), 65536)
    except wire.WireError:
        return False
    return True


def _server_accepts(**fields: float) -> bool:
    try:
        parse_fix({"lat": 1.0, "lon": 2.0, "accuracy_m": 5.0, "ts": NOW, **fields}, NOW)
    except BadRequest:
        return False
    return True


@pytest.mark.parametrize(("field", "edge", "beyond"), [
    ("speed_mps", limits.SPEED_MAX_MPS, limits.SPEED_MAX_MPS + 1),
    ("accuracy_m", limits.ACCURACY_MAX_M, limits.ACCURACY_MAX_M + 1),
    ("lat", limits.LAT_MAX_DEG, limits.LAT_MAX_DEG + 0.001),
    ("lon", limits.LON_MIN_DEG, limits.LON_MIN_DEG - 0.001),
    ("battery_pct", limits.BATTERY_MAX_PCT, limits.BATTERY_MAX_PCT + 1),
])
def test_wire_and_server_agree_on_every_fix_bound(field: str, edge: float, beyond: float) -> None:
    assert _wire_accepts(**{field: edge}) and _server_accepts(**{field: edge})
    assert not _wire_accepts(**{field: beyond}) and not _server_accepts(**{field: beyond})


def test_heading_is_half_open_on_both_edges() -> None:
    below = limits.HEADING_MAX_DEG - 0.5
    assert _wire_accepts(heading_deg=below) and _server_accepts(heading_deg=below)
    full_turn = limits.HEADING_MAX_DEG
    assert not _wire_accepts(heading_deg=full_turn)
    assert not _server_accepts(heading_deg=full_turn)


def test_radius_and_gain_bounds_are_the_protocols() -> None:
    index = ProximityIndex()
    index.upsert("a", 0.0, 0.0, limits.RADIUS_MAX_M)
    with pytest.raises(BadRequest):
        index.set_radius("a", limits.RADIUS_MAX_M + 1)
    with pytest.raises(BadRequest):
        index.set_radius("a", limits.RADIUS_MIN_M - 1)
    plan = MixPlan()
    plan.set_volume("l", "s", limits.GAIN_MAX)
    with pytest.raises(ValueError, match="gain"):
        plan.set_volume("l", "s", limits.GAIN_MAX + 0.01)
