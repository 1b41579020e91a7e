"""Plans as configuration: built-in defaults, TOML/JSON files, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from billing.errors import PlansFileError, UnknownPlan
from billing.plans import BUILTIN_PLANS, load_catalog, parse_catalog
from common.errors import BadRequest
from tests.billing_support import PLANS_TOML, PRICE_PLUS


def test_builtin_defaults_match_the_product_description() -> None:
    catalog = load_catalog(None)
    free, plus = catalog.get("free"), catalog.get("plus")
    assert catalog.default is free
    assert (free.max_group_members, free.voice, free.music, free.history_days, free.max_places) \
        == (5, True, False, 1, 2)
    assert (plus.max_group_members, plus.music, plus.history_days, plus.max_places) \
        == (25, True, 30, None)
    assert plus.stripe_price_id is None  # until the deployment names its price


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(PLANS_TOML)
    catalog = load_catalog(path)
    assert catalog.get("plus").display_name == "Disco Plus"
    assert catalog.by_price(PRICE_PLUS) is catalog.get("plus")
    assert catalog.by_price("price_other") is None


def test_json_file_with_null_for_unlimited(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(BUILTIN_PLANS))
    raw["plans"]["plus"]["stripe_price_id"] = "price_x"
    raw["plans"]["plus"]["max_places"] = None
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    assert load_catalog(path).get("plus").max_places is None


def test_unknown_plan_names_the_known_ones() -> None:
    catalog = load_catalog(None)
    with pytest.raises(UnknownPlan) as info:
        catalog.get("gold")
    assert isinstance(info.value, BadRequest)
    assert "gold" in info.value.message and "free, plus" in info.value.message


def _plans(**plus_overrides: object) -> dict[str, object]:
    raw = json.loads(json.dumps(BUILTIN_PLANS))
    raw["plans"]["plus"].update(plus_overrides)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "needs a 'plans' table"),
        ({"plans": {}}, "defines no plans"),
        ({"plans": BUILTIN_PLANS["plans"], "extra": 1}, "unknown top-level keys"),
        ({"default": "gold", "plans": BUILTIN_PLANS["plans"]}, "default plan 'gold'"),
        (_plans(max_group_members=0), "max_group_members must be an integer"),
        (_plans(max_group_members="25"), "max_group_members must be an integer"),
        (_plans(music="yes"), "music must be true or false"),
        (_plans(history_days=-1), "history_days must be an integer"),
        (_plans(max_places="lots"), "max_places must be an integer"),
        (_plans(colour="red"), "unknown keys ['colour']"),
        (_plans(stripe_price_id=""), "stripe_price_id must be a non-empty string"),
        ({"plans": {"Free!": BUILTIN_PLANS["plans"]["free"]}, "default": "Free!"}, "plan name"),
        ({"plans": {"free": {"voice": True}}}, "missing max_group_members"),
    ],
)
def test_bad_catalogs_are_refused_with_the_reason(raw: dict[str, object], message: str) -> None:
    with pytest.raises(PlansFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_catalog(raw)


def test_default_plan_cannot_be_paid() -> None:
    raw = json.loads(json.dumps(BUILTIN_PLANS))
    raw["plans"]["free"]["stripe_price_id"] = "price_free"
    with pytest.raises(PlansFileError, match="must not have a stripe_price_id"):
        parse_catalog(raw)


def test_two_plans_cannot_share_a_price() -> None:
    raw = json.loads(json.dumps(BUILTIN_PLANS))
    raw["plans"]["plus"]["stripe_price_id"] = "price_same"
    raw["plans"]["pro"] = dict(raw["plans"]["plus"])
    with pytest.raises(PlansFileError, match="share stripe_price_id"):
        parse_catalog(raw)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PlansFileError, match="cannot read"):
        load_catalog(tmp_path / "missing.toml")
    bad = tmp_path / "plans.toml"
    bad.write_text("[plans.free\n")
    with pytest.raises(PlansFileError, match="not valid TOML"):
        load_catalog(bad)
    bad_json = tmp_path / "plans.json"
    bad_json.write_text("{")
    with pytest.raises(PlansFileError, match="not valid JSON"):
        load_catalog(bad_json)
