"""Subscription and webhook-event rows: read, write, and convert to the pure state.

Functions take an open session; the caller owns the transaction (so an event
row and its effect commit or roll back together).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.models import Subscription, WebhookEvent
from billing.plans import PlanCatalog
from billing.webhooks import StripeEvent, SubscriptionState
from groups.models import User

DETAIL_MAX_CHARS = 512


async def get_subscription(session: AsyncSession, user_id: int) -> Subscription | None:
    return await session.get(Subscription, user_id)


async def subscription_by_customer(session: AsyncSession, customer_id: str
                                   ) -> Subscription | None:
    rows = await session.exec(
        select(Subscription).where(Subscription.stripe_customer_id == customer_id)
    )
    return rows.first()


def new_subscription(user_id: int, catalog: PlanCatalog, now: float,
                     customer_id: str | None = None) -> Subscription:
    return Subscription(user_id=user_id, stripe_customer_id=customer_id,
                        plan=catalog.default.name, status="none", updated_at=now)


def state_of(sub: Subscription) -> SubscriptionState:
    return SubscriptionState(
        plan=sub.plan,
        status=sub.status,
        stripe_customer_id=sub.stripe_customer_id,
        stripe_subscription_id=sub.stripe_subscription_id,
        current_period_end=sub.current_period_end,
        grace_until=sub.grace_until,
        cancel_at_period_end=sub.cancel_at_period_end,
        last_event_created=sub.last_event_created,
    )


def write_state(sub: Subscription, state: SubscriptionState, now: float,
                source: str = "stripe") -> bool:
    """Copy ``state`` onto the row; True if anything changed."""
    if state == state_of(sub):
        return False
    sub.plan = state.plan
    sub.status = state.status
    sub.stripe_customer_id = state.stripe_customer_id
    sub.stripe_subscription_id = state.stripe_subscription_id
    sub.current_period_end = state.current_period_end
    sub.grace_until = state.grace_until
    sub.cancel_at_period_end = state.cancel_at_period_end
    sub.last_event_created = state.last_event_created
    sub.source = source
    sub.updated_at = now
    return True


async def event_seen(session: AsyncSession, event_id: str) -> bool:
    return await session.get(WebhookEvent, event_id) is not None


def event_row(event: StripeEvent, outcome: str, user_id: int | None, detail: str,
              now: float) -> WebhookEvent:
    return WebhookEvent(id=event.id, type=event.type[:128], created=event.created,
                        received_at=now, outcome=outcome, user_id=user_id,
                        detail=detail[:DETAIL_MAX_CHARS])


async def user_exists(session: AsyncSession, user_id: int) -> bool:
    return await session.get(User, user_id) is not None


async def find_user(session: AsyncSession, who: str) -> User | None:
    """A user by id (digits) or username."""
    if who.isdigit():
        return await session.get(User, int(who))
    rows = await session.exec(select(User).where(User.username == who.strip().lower()))
    return rows.first()


@dataclass(frozen=True)
class SubscriptionRow:
    user_id: int
    username: str
    plan: str
    status: str
    source: str
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    current_period_end: float | None
    grace_until: float | None
    updated_at: float


async def list_subscriptions(session: AsyncSession) -> list[SubscriptionRow]:
    rows = await session.exec(
        select(Subscription, User)
        .join(User, col(User.id) == col(Subscription.user_id))
        .order_by(col(Subscription.user_id))
    )
    return [
        SubscriptionRow(s.user_id, u.username, s.plan, s.status, s.source, s.stripe_customer_id,
                        s.stripe_subscription_id, s.current_period_end, s.grace_until,
                        s.updated_at)
        for s, u in rows.all()
    ]


async def recent_events(session: AsyncSession, limit: int = 50) -> list[WebhookEvent]:
    rows = await session.exec(
        select(WebhookEvent).order_by(col(WebhookEvent.received_at).desc()).limit(limit)
    )
    return list(rows.all())
