"""Plans are configuration, not code.

A deployment names its plans, their limits and their Stripe price ids in a TOML
or JSON file (``DISCO_PLANS_FILE``); without one, the built-in catalog below
applies (free and plus, plus without a price id, so checkout says plainly that
it is not configured yet). Loading validates everything up front so a typo in
the file stops the server at start-up instead of surfacing as a wrong limit
weeks later.

File shape (TOML; JSON is the same structure, ``null`` allowed for unlimited)::

    default = "free"                 # the plan of users without a subscription

    [plans.free]
    display_name = "Free"
    max_group_members = 5
    voice = true
    music = false
    history_days = 1
    max_places = 2

    [plans.plus]
    display_name = "Plus"
    stripe_price_id = "price_1Pxyz..."
    max_group_members = 25
    voice = true
    music = true
    history_days = 30
    max_places = "unlimited"
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing.errors import PlansFileError, UnknownPlan

ENTITLEMENTS_TOPIC = "billing:entitlements"
"""The bus topic of plan changes: ``{"user_id", "group_ids", "music"}``, which every node
applies to its live rooms (``signaling.live_music``)."""

logger = logging.getLogger(__name__)

PLAN_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
UNLIMITED = "unlimited"
MAX_GROUP_MEMBERS_CAP = 10_000  # sanity bound on a configured limit, not a product limit
MAX_HISTORY_DAYS_CAP = 3_650

_REQUIRED = ("max_group_members", "voice", "music", "history_days", "max_places")
_OPTIONAL = ("display_name", "stripe_price_id")


@dataclass(frozen=True)
class Plan:
    """One plan's limits. ``max_places`` None means unlimited."""

    name: str
    display_name: str
    stripe_price_id: str | None
    max_group_members: int
    voice: bool
    music: bool
    history_days: int
    max_places: int | None

    @property
    def paid(self) -> bool:
        return self.stripe_price_id is not None


BUILTIN_PLANS: dict[str, Any] = {
    "default": "free",
    "plans": {
        "free": {
            "display_name": "Free",
            "max_group_members": 5,
            "voice": True,
            "music": False,
            "history_days": 1,
            "max_places": 2,
        },
        "plus": {
            "display_name": "Plus",
            "stripe_price_id": None,
            "max_group_members": 25,
            "voice": True,
            "music": True,
            "history_days": 30,
            "max_places": UNLIMITED,
        },
    },
}


class PlanCatalog:
    """All plans by name, with the default (unpaid) plan and a price-id index."""

    def __init__(self, plans: Mapping[str, Plan], default: str) -> None:
        if default not in plans:
            raise PlansFileError(f"default plan {default!r} is not one of the plans")
        if plans[default].paid:
            raise PlansFileError(f"default plan {default!r} must not have a stripe_price_id")
        self._plans = dict(plans)
        self.default = plans[default]
        self._by_price: dict[str, Plan] = {}
        for plan in plans.values():
            if plan.stripe_price_id is None:
                continue
            if plan.stripe_price_id in self._by_price:
                raise PlansFileError(
                    f"plans {self._by_price[plan.stripe_price_id].name!r} and {plan.name!r} "
                    f"share stripe_price_id {plan.stripe_price_id!r}"
                )
            self._by_price[plan.stripe_price_id] = plan

    def __iter__(self) -> Iterator[Plan]:
        return iter(self._plans.values())

    def __contains__(self, name: object) -> bool:
        return name in self._plans

    def names(self) -> list[str]:
        return list(self._plans)

    def get(self, name: str) -> Plan:
        """The plan called ``name``, or UnknownPlan listing the real ones."""
        plan = self._plans.get(name)
        if plan is None:
            known = ", ".join(self._plans)
            raise UnknownPlan(f"unknown plan {name!r}; plans are: {known}",
                              detail={"plan": name, "known": list(self._plans)})
        return plan

    def find(self, name: str | None) -> Plan | None:
        return self._plans.get(name) if name is not None else None

    def by_price(self, price_id: str | None) -> Plan | None:
        return self._by_price.get(price_id) if price_id is not None else None


def _int_field(name: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlansFileError(
            f"plan {name!r}: {key} must be an integer {low}..{high}, got {value!r}"
        )
    return value


def _bool_field(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PlansFileError(f"plan {name!r}: {key} must be true or false, got {value!r}")
    return value


def parse_plan(name: str, raw: Any) -> Plan:
    """One plan from its mapping; every limit must be spelled out."""
    if not PLAN_NAME_RE.fullmatch(name):
        raise PlansFileError(f"plan name {name!r} must match {PLAN_NAME_RE.pattern}")
    if not isinstance(raw, Mapping):
        raise PlansFileError(f"plan {name!r} must be a table of settings")
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise PlansFileError(f"plan {name!r}: unknown keys {sorted(unknown)}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise PlansFileError(f"plan {name!r}: missing {', '.join(missing)}")
    places = raw["max_places"]
    max_places = (
        None if places is None or places == UNLIMITED
        else _int_field(name, "max_places", places, 0, MAX_GROUP_MEMBERS_CAP)
    )
    price = raw.get("stripe_price_id")
    if price is not None and (not isinstance(price, str) or not price.strip()):
        raise PlansFileError(f"plan {name!r}: stripe_price_id must be a non-empty string")
    display = raw.get("display_name", name.capitalize())
    if not isinstance(display, str) or not display.strip():
        raise PlansFileError(f"plan {name!r}: display_name must be a non-empty string")
    return Plan(
        name=name,
        display_name=display,
        stripe_price_id=price.strip() if price else None,
        max_group_members=_int_field(
            name, "max_group_members", raw["max_group_members"], 1, MAX_GROUP_MEMBERS_CAP
        ),
        voice=_bool_field(name, "voice", raw["voice"]),
        music=_bool_field(name, "music", raw["music"]),
        history_days=_int_field(name, "history_days", raw["history_days"], 0,
                                MAX_HISTORY_DAYS_CAP),
        max_places=max_places,
    )


def parse_catalog(raw: Any) -> PlanCatalog:
    """A catalog from the decoded file (or ``BUILTIN_PLANS``)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("plans"), Mapping):
        raise PlansFileError("plans file needs a 'plans' table")
    unknown = set(raw) - {"default", "plans"}
    if unknown:
        raise PlansFileError(f"plans file: unknown top-level keys {sorted(unknown)}")
    if not raw["plans"]:
        raise PlansFileError("plans file defines no plans")
    plans = {name: parse_plan(name, body) for name, body in raw["plans"].items()}
    default = raw.get("default", "free")
    if not isinstance(default, str):
        raise PlansFileError("'default' must be a plan name")
    return PlanCatalog(plans, default)


def load_catalog(path: Path | None) -> PlanCatalog:
    """The catalog from ``path`` (.toml or .json), or the built-in one when None."""
    if path is None:
        logger.info("no plans file configured: using the built-in free/plus plans")
        return parse_catalog(BUILTIN_PLANS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlansFileError(f"cannot read plans file {path}: {exc}") from exc
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise PlansFileError(f"plans file {path} is not valid "
                             f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
                             ) from exc
    catalog = parse_catalog(raw)
    logger.info("loaded plans %s from %s", ", ".join(catalog.names()), path)
    return catalog
