"""Location fix validation and the per-member rate limit. Pure, table-driven."""

from __future__ import annotations

import math

import pytest

from common.errors import BadRequest, RateLimited
from groups.limiter import make_limiter
from groups.location.fixes import (
    FIX_BURST,
    FIX_RATE_PER_S,
    FUTURE_SKEW_S,
    MAX_FIX_AGE_S,
    Fix,
    FixLimiter,
    parse_fix,
)

NOW = 1_800_000_000.0
GOOD = {"lat": 52.52, "lon": 13.405, "accuracy_m": 12.5, "ts": NOW - 3}

VALID = [
    (GOOD, Fix(52.52, 13.405, 12.5, NOW - 3)),
    ({"lat": -90, "lon": -180, "accuracy_m": 1}, Fix(-90.0, -180.0, 1.0, NOW)),
    (
        {"lat": 90, "lon": 180, "accuracy_m": 5, "ts": NOW + FUTURE_SKEW_S},
        Fix(90, 180, 5, NOW + 60),
    ),
    (
        {**GOOD, "speed_mps": 3.2, "heading_deg": 359.9, "battery_pct": 87},
        Fix(52.52, 13.405, 12.5, NOW - 3, 3.2, 359.9, 87),
    ),
    (
        {**GOOD, "speed_mps": None, "battery_pct": 0},
        Fix(52.52, 13.405, 12.5, NOW - 3, None, None, 0),
    ),
]

INVALID = [
    ({**GOOD, "lat": 90.0001}, "lat"),
    ({**GOOD, "lat": -91}, "lat"),
    ({**GOOD, "lon": 180.5}, "lon"),
    ({**GOOD, "lon": -181}, "lon"),
    ({**GOOD, "lat": math.nan}, "lat"),
    ({**GOOD, "lon": math.inf}, "lon"),
    ({**GOOD, "lat": "52.5"}, "lat"),
    ({**GOOD, "lat": True}, "lat"),
    ({"lon": 1.0, "accuracy_m": 5}, "lat"),
    ({**GOOD, "accuracy_m": 0}, "accuracy_m"),
    ({**GOOD, "accuracy_m": -3}, "accuracy_m"),
    ({**GOOD, "accuracy_m": math.nan}, "accuracy_m"),
    ({**GOOD, "accuracy_m": 1e9}, "accuracy_m"),
    ({"lat": 1.0, "lon": 1.0}, "accuracy_m"),
    ({**GOOD, "ts": NOW + FUTURE_SKEW_S + 1}, "ts"),
    ({**GOOD, "ts": NOW + 365 * 86400}, "ts"),
    ({**GOOD, "ts": NOW - MAX_FIX_AGE_S - 1}, "ts"),
    ({**GOOD, "ts": math.inf}, "ts"),
    ({**GOOD, "speed_mps": -1}, "speed_mps"),
    ({**GOOD, "speed_mps": 1000}, "speed_mps"),
    ({**GOOD, "heading_deg": 360}, "heading_deg"),
    ({**GOOD, "heading_deg": -0.1}, "heading_deg"),
    ({**GOOD, "battery_pct": 101}, "battery_pct"),
    ({**GOOD, "battery_pct": -1}, "battery_pct"),
    ({**GOOD, "battery_pct": math.nan}, "battery_pct"),
]


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid_fixes(data: dict[str, object], expected: Fix) -> None:
    assert parse_fix(data, NOW) == expected


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_invalid_fixes_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_fix(data, NOW)
    assert info.value.detail["field"] == field
    assert field in info.value.message


def test_fix_json_round_trip() -> None:
    fix = parse_fix({**GOOD, "battery_pct": 50}, NOW)
    assert parse_fix(fix.to_json(), NOW) == fix


async def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limiter = FixLimiter()
    for _ in range(FIX_BURST):
        await limiter.check(7, NOW)
    with pytest.raises(RateLimited) as info:
        await limiter.check(7, NOW)
    assert info.value.detail["retry_after_s"] > 0
    await limiter.check(8, NOW)  # another member is unaffected
    await limiter.check(7, NOW + 1.0 / FIX_RATE_PER_S)  # one token back
    with pytest.raises(RateLimited):
        await limiter.check(7, NOW + 1.0 / FIX_RATE_PER_S)


async def test_a_members_fix_budget_is_one_across_nodes(redis_url: str, redis_prefix: str
                                                        ) -> None:
    """Two nodes' limiters on one Redis: sending to both does not double the budget."""
    import redis.asyncio as aioredis

    client_a, client_b = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        nodes = [FixLimiter(make_limiter(c, "fixes", FIX_RATE_PER_S, FIX_BURST, redis_prefix))
                 for c in (client_a, client_b)]
        accepted = 0
        for n in range(2 * FIX_BURST):
            try:
                await nodes[n % 2].check("alice", NOW)
                accepted += 1
            except RateLimited:
                pass
        assert accepted == FIX_BURST
        await nodes[1].check("bob", NOW)  # another member has a budget of their own
    finally:
        await client_a.aclose()
        await client_b.aclose()
