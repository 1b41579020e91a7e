"""Plan + subscription status + time -> entitlements: table-driven, no event loop."""

from __future__ import annotations

import pytest

from billing.entitlements import (
    DAY_S,
    PERIOD_LAPSE_S,
    check_group_size,
    check_places,
    history_cutoff,
    require_music,
    resolve,
)
from billing.plans import load_catalog
from common.errors import LimitExceeded

NOW = 1_700_000_000.0
CATALOG = load_catalog(None)


@pytest.mark.parametrize(
    ("plan", "status", "grace_until", "period_end", "effective", "in_grace"),
    [
        (None, None, None, None, "free", False),  # never subscribed
        ("free", "none", None, None, "free", False),
        ("plus", "active", None, NOW + 10 * DAY_S, "plus", False),
        ("plus", "trialing", None, None, "plus", False),
        ("plus", "active", None, None, "plus", False),  # admin grant without end
        # renewal event missed: a little late is fine, long past the end is not
        ("plus", "active", None, NOW - PERIOD_LAPSE_S + 1, "plus", False),
        ("plus", "active", None, NOW - PERIOD_LAPSE_S - 1, "free", False),
        ("plus", "past_due", NOW + 1, None, "plus", True),  # inside the grace period
        ("plus", "past_due", NOW, None, "free", False),  # grace just ended
        ("plus", "unpaid", NOW - DAY_S, None, "free", False),
        ("plus", "past_due", None, None, "free", False),  # no grace recorded: fail closed
        ("plus", "canceled", None, None, "free", False),
        ("plus", "incomplete", None, None, "free", False),
        ("plus", "incomplete_expired", None, None, "free", False),
        ("plus", "paused", None, None, "free", False),
        ("gold", "active", None, None, "free", False),  # plan removed from the file
    ],
)
def test_resolve(plan: str | None, status: str | None, grace_until: float | None,
                 period_end: float | None, effective: str, in_grace: bool) -> None:
    ent = resolve(CATALOG, plan, status, now=NOW, grace_until=grace_until,
                  current_period_end=period_end)
    assert ent.plan == effective
    assert ent.in_grace is in_grace
    expected = CATALOG.get(effective)
    assert (ent.max_group_members, ent.music, ent.history_days, ent.max_places) == (
        expected.max_group_members, expected.music, expected.history_days, expected.max_places)


def test_subscribed_plan_is_reported_even_when_not_in_effect() -> None:
    ent = resolve(CATALOG, "plus", "canceled", now=NOW)
    assert (ent.plan, ent.subscribed_plan, ent.status) == ("free", "plus", "canceled")
    assert ent.to_json()["subscribed_plan"] == "plus"


@pytest.mark.parametrize(
    ("plan", "members", "refused"),
    [("free", 4, False), ("free", 5, True), ("plus", 5, False), ("plus", 24, False),
     ("plus", 25, True)],
)
def test_group_size(plan: str, members: int, refused: bool) -> None:
    ent = resolve(CATALOG, plan, "active", now=NOW)
    if not refused:
        check_group_size(ent, members)
        return
    with pytest.raises(LimitExceeded) as info:
        check_group_size(ent, members)
    assert info.value.detail["limit"] == "max_group_members"
    assert str(ent.max_group_members) in info.value.message


@pytest.mark.parametrize(
    ("plan", "places", "refused"),
    [("free", 1, False), ("free", 2, True), ("plus", 10_000, False)],
)
def test_places(plan: str, places: int, refused: bool) -> None:
    ent = resolve(CATALOG, plan, "active", now=NOW)
    if refused:
        with pytest.raises(LimitExceeded) as info:
            check_places(ent, places)
        assert info.value.detail["limit"] == "max_places"
    else:
        check_places(ent, places)


def test_music_and_history() -> None:
    free = resolve(CATALOG, None, None, now=NOW)
    with pytest.raises(LimitExceeded) as info:
        require_music(free)
    assert info.value.detail["limit"] == "music"
    require_music(resolve(CATALOG, "plus", "active", now=NOW))
    assert history_cutoff(free, NOW) == NOW - DAY_S
    assert history_cutoff(resolve(CATALOG, "plus", "active", now=NOW), NOW) == NOW - 30 * DAY_S
