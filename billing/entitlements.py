"""Plan + subscription status + time -> what a user (and the groups they own) may do.

Pure: no I/O, time passed in as ``now``. Everything that enforces a limit asks
this module, so "what does past_due mean" is decided in exactly one place:

* ``active`` / ``trialing``: the subscribed plan, while its period has not
  lapsed (``current_period_end`` more than ``PERIOD_LAPSE_S`` in the past means
  Stripe stopped renewing it and we missed the event; fail closed, not open).
* ``past_due`` / ``unpaid``: the subscribed plan until ``grace_until``, then the
  default plan. The grace period starts at the first failed payment.
* anything else (``canceled``, ``incomplete``, ``incomplete_expired``,
  ``paused``, ``none``): the default plan.

The ``check_*`` helpers raise ``LimitExceeded`` naming the limit (the same
``detail`` shape ``groups.service.accept_invite`` uses), so the edge can show
the user which limit said no.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.plans import Plan, PlanCatalog
from common.errors import LimitExceeded

DAY_S = 24 * 3600
GRACE_PERIOD_S = 7 * DAY_S  # features kept after a failed payment while Stripe retries
PERIOD_LAPSE_S = 2 * DAY_S  # an "active" period this far past its end counts as lapsed

ACTIVE_STATUSES = frozenset({"active", "trialing"})
GRACE_STATUSES = frozenset({"past_due", "unpaid"})
KNOWN_STATUSES = ACTIVE_STATUSES | GRACE_STATUSES | frozenset(
    {"none", "canceled", "incomplete", "incomplete_expired", "paused"}
)


@dataclass(frozen=True)
class Entitlements:
    """What is allowed right now. ``max_places`` None means unlimited."""

    plan: str
    max_group_members: int
    voice: bool
    music: bool
    history_days: int
    max_places: int | None
    status: str
    subscribed_plan: str  # what the user pays for, even while it is not in effect
    in_grace: bool
    grace_until: float | None

    @classmethod
    def of(cls, plan: Plan, *, status: str, subscribed: Plan, in_grace: bool = False,
           grace_until: float | None = None) -> Entitlements:
        return cls(
            plan=plan.name,
            max_group_members=plan.max_group_members,
            voice=plan.voice,
            music=plan.music,
            history_days=plan.history_days,
            max_places=plan.max_places,
            status=status,
            subscribed_plan=subscribed.name,
            in_grace=in_grace,
            grace_until=grace_until,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "plan": self.plan,
            "max_group_members": self.max_group_members,
            "voice": self.voice,
            "music": self.music,
            "history_days": self.history_days,
            "max_places": self.max_places,
            "status": self.status,
            "subscribed_plan": self.subscribed_plan,
            "in_grace": self.in_grace,
            "grace_until": self.grace_until,
        }


def resolve(
    catalog: PlanCatalog,
    plan_name: str | None,
    status: str | None,
    *,
    now: float,
    grace_until: float | None = None,
    current_period_end: float | None = None,
) -> Entitlements:
    """The entitlements of a user whose subscription is (plan_name, status).

    An unknown plan name (a plan removed from the plans file while users still
    hold it) falls back to the default plan rather than failing every request.
    """
    status = status or "none"
    subscribed = catalog.find(plan_name) or catalog.default
    default = catalog.default
    if subscribed is default:
        return Entitlements.of(default, status=status, subscribed=default)
    if status in ACTIVE_STATUSES:
        lapsed = current_period_end is not None and now > current_period_end + PERIOD_LAPSE_S
        effective = default if lapsed else subscribed
        return Entitlements.of(effective, status=status, subscribed=subscribed)
    if status in GRACE_STATUSES and grace_until is not None and now < grace_until:
        return Entitlements.of(subscribed, status=status, subscribed=subscribed, in_grace=True,
                               grace_until=grace_until)
    return Entitlements.of(default, status=status, subscribed=subscribed, grace_until=grace_until)


def check_group_size(ent: Entitlements, current_members: int) -> None:
    """Refuse one more member when the group already has ``max_group_members``."""
    if current_members >= ent.max_group_members:
        raise LimitExceeded(
            f"group is full: the owner's {ent.plan} plan allows {ent.max_group_members} members",
            detail={"limit": "max_group_members", "value": ent.max_group_members,
                    "plan": ent.plan},
        )


def require_music(ent: Entitlements) -> None:
    if not ent.music:
        raise LimitExceeded(
            f"music needs a plan with music; the group owner's plan is {ent.plan}",
            detail={"limit": "music", "value": False, "plan": ent.plan},
        )


def require_voice(ent: Entitlements) -> None:
    if not ent.voice:
        raise LimitExceeded(
            f"voice needs a plan with voice; the group owner's plan is {ent.plan}",
            detail={"limit": "voice", "value": False, "plan": ent.plan},
        )


def check_places(ent: Entitlements, current_places: int) -> None:
    """Refuse one more place (geofence) when the group has ``max_places``."""
    if ent.max_places is not None and current_places >= ent.max_places:
        raise LimitExceeded(
            f"the owner's {ent.plan} plan allows {ent.max_places} places",
            detail={"limit": "max_places", "value": ent.max_places, "plan": ent.plan},
        )


def history_cutoff(ent: Entitlements, now: float) -> float:
    """Location samples older than this are outside the plan's history window."""
    return now - ent.history_days * DAY_S
