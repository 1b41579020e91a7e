"""Billing tables: one subscription row per user, and every webhook delivery.

Times are unix seconds (float, UTC) except ``last_event_created``, which keeps
Stripe's integer ``created`` so out-of-order events compare exactly. The schema
is created by migration 0003, never ``create_all``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class Subscription(SQLModel, table=True):
    """A user's plan. The groups the user owns get its entitlements.

    The row exists from the first checkout (to remember the Stripe customer) or
    an admin grant; users without a row are on the default plan.
    """

    __tablename__ = "subscriptions"

    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    stripe_customer_id: str | None = Field(default=None, max_length=255, unique=True, index=True)
    stripe_subscription_id: str | None = Field(default=None, max_length=255, index=True)
    plan: str = Field(max_length=32)
    status: str = Field(max_length=32)  # Stripe's status, or "none" before any subscription
    source: str = Field(default="stripe", max_length=16)  # "stripe" | "admin"
    current_period_end: float | None = None
    grace_until: float | None = None
    cancel_at_period_end: bool = False
    # Stripe ``created`` of the last applied event (64-bit: unix seconds outlive 2038)
    last_event_created: int = Field(default=0, sa_type=BigInteger)
    updated_at: float


class WebhookEvent(SQLModel, table=True):
    """One Stripe event id, inserted in the same transaction as its effect.

    The primary key is the unique constraint that makes replays harmless.
    """

    __tablename__ = "webhook_events"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=128)
    created: int = Field(sa_type=BigInteger)
    received_at: float = Field(index=True)
    outcome: str = Field(max_length=32)
    user_id: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    detail: str = Field(default="", max_length=512)
