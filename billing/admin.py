"""Operator tools behind ``disco admin``: who pays for what, what Stripe sent us,
and granting a plan by hand for support cases.

A manual grant is recorded as ``source = "admin"`` and stamped with the grant
time as its ``last_event_created``, so an older Stripe event arriving later
cannot silently undo it; newer Stripe activity for the user does take over.
"""

from __future__ import annotations

import logging

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import store
from billing.entitlements import DAY_S
from billing.models import Subscription, WebhookEvent
from billing.plans import PlanCatalog
from billing.store import SubscriptionRow
from common.errors import BadRequest, NotFound

logger = logging.getLogger(__name__)

MAX_GRANT_DAYS = 3650


async def list_subscriptions(session: AsyncSession) -> list[SubscriptionRow]:
    return await store.list_subscriptions(session)


async def recent_webhooks(session: AsyncSession, limit: int = 50) -> list[WebhookEvent]:
    if not 0 < limit <= 1000:
        raise BadRequest("limit must be 1..1000")
    return await store.recent_events(session, limit)


async def grant_plan(session: AsyncSession, who: str, plan_name: str, catalog: PlanCatalog,
                     now: float, days: int | None = None) -> Subscription:
    """Put user ``who`` (id or username) on ``plan_name``, optionally for ``days``.

    Granting the default plan revokes a previous grant.
    """
    plan = catalog.get(plan_name)
    if days is not None and not 0 < days <= MAX_GRANT_DAYS:
        raise BadRequest(f"days must be 1..{MAX_GRANT_DAYS}")
    user = await store.find_user(session, who)
    if user is None or user.id is None:
        raise NotFound(f"no user {who!r}")
    sub = await store.get_subscription(session, user.id)
    if sub is None:
        sub = store.new_subscription(user.id, catalog, now)
    sub.plan = plan.name
    sub.status = "none" if plan is catalog.default else "active"
    sub.source = "admin"
    sub.grace_until = None
    sub.cancel_at_period_end = False
    sub.current_period_end = now + days * DAY_S if days is not None else None
    sub.last_event_created = max(sub.last_event_created, int(now))
    sub.updated_at = now
    session.add(sub)
    await session.flush()
    logger.warning("admin: granted plan %s to user %s (%s) for %s", plan.name, user.id,
                   user.username, f"{days} days" if days else "no end date")
    return sub
