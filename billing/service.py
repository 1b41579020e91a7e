"""Billing use cases: entitlements lookups, checkout, portal, webhook handling.

``entitlements_for_user`` / ``entitlements_for_group`` are what the rest of the
server calls wherever a limit applies (group size on invite accept, music,
history length, places). They take an open session, ``now`` and the
deployment's plan catalog (``AppState.plans``, loaded once at start-up).

Webhooks: the signature is checked by the stripe package on the raw body
before anything is parsed; then the event id row and the subscription change
are written in one transaction, so a replay (same id) finds the row and does
nothing, and two concurrent deliveries of one event cannot both apply: the
loser's insert hits the primary key and its whole transaction rolls back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import store
from billing.entitlements import (
    ACTIVE_STATUSES,
    GRACE_STATUSES,
    Entitlements,
    history_cutoff,
    resolve,
)
from billing.errors import (
    AlreadySubscribed,
    BillingNotConfigured,
    InvalidWebhook,
    NoBillingAccount,
)
from billing.plans import PlanCatalog
from billing.webhooks import (
    HANDLED_EVENT_TYPES,
    WEBHOOK_TOLERANCE_S,
    Outcome,
    StripeEvent,
    apply_event,
    check_signature_time,
    customer_of,
    decode_payload,
    parse_event,
    user_hint,
)
from common.db import SessionFactory, session_scope
from common.errors import BadRequest, NotFound
from groups.models import Group, User

if TYPE_CHECKING:  # stripe (with requests, httpx, ~10 MB) loads only when configured
    from billing.stripe_api import StripeGateway

logger = logging.getLogger(__name__)

# Stripe statuses of a subscription that bills no more ("none": never subscribed).
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired", "none"})

def entitlements_of(sub: object | None, now: float, catalog: PlanCatalog) -> Entitlements:
    """Entitlements for a subscription row (None: never subscribed)."""
    from billing.models import Subscription

    if not isinstance(sub, Subscription):
        return resolve(catalog, None, None, now=now)
    return resolve(catalog, sub.plan, sub.status, now=now, grace_until=sub.grace_until,
                   current_period_end=sub.current_period_end)


async def entitlements_for_user(session: AsyncSession, user_id: int, now: float,
                                catalog: PlanCatalog) -> Entitlements:
    return entitlements_of(await store.get_subscription(session, user_id), now, catalog)


async def entitlements_for_group(session: AsyncSession, group_id: int, now: float,
                                 catalog: PlanCatalog) -> Entitlements:
    """A group has its owner's entitlements (a subscription belongs to a user)."""
    group = await session.get(Group, group_id)
    if group is None:
        raise NotFound("no such group")
    return await entitlements_for_user(session, group.owner_id, now, catalog)


async def history_cutoffs(session: AsyncSession, now: float,
                          catalog: PlanCatalog) -> dict[int, float]:
    """Group id -> the oldest timestamp its owner's plan still keeps history for.

    For the retention run: one query for every group, not one per group.
    """
    from billing.models import Subscription

    rows = await session.exec(
        select(Group.id, Subscription)
        .join(Subscription, col(Subscription.user_id) == col(Group.owner_id), isouter=True)
    )
    return {gid: history_cutoff(entitlements_of(sub, now, catalog), now)
            for gid, sub in rows.all() if gid is not None}


async def music_by_group(session: AsyncSession, group_ids: list[int], now: float,
                         catalog: PlanCatalog) -> dict[int, bool]:
    """Group id -> whether its owner's plan allows music: one query for all of them.

    For the periodic re-check of live rooms; groups that no longer exist are absent.
    """
    from billing.models import Subscription

    if not group_ids:
        return {}
    rows = await session.exec(
        select(Group.id, Subscription)
        .join(Subscription, col(Subscription.user_id) == col(Group.owner_id), isouter=True)
        .where(col(Group.id).in_(group_ids))
    )
    return {gid: entitlements_of(sub, now, catalog).music
            for gid, sub in rows.all() if gid is not None}


async def entitlements_notice(session: AsyncSession, user_id: int, now: float,
                              catalog: PlanCatalog) -> dict[str, object]:
    """The ``ENTITLEMENTS_TOPIC`` message for a plan change of ``user_id``."""
    ent = await entitlements_for_user(session, user_id, now, catalog)
    groups = await owned_group_ids(session, user_id)
    return {"type": "entitlements", "user_id": user_id, "group_ids": groups, **ent.to_json()}


async def owned_group_ids(session: AsyncSession, user_id: int) -> list[int]:
    rows = await session.exec(select(Group.id).where(Group.owner_id == user_id)
                              .order_by(col(Group.id)))
    return [gid for gid in rows.all() if gid is not None]


def verify_signature(body: bytes, signature: str | None, secret: str) -> StripeEvent:
    """Stripe's own check (HMAC-SHA256 over ``t.body``, 300 s tolerance), then parse.

    Stripe's tolerance only refuses old signatures; ``check_signature_time``
    also refuses those dated in the future (both against the wall clock, as
    Stripe's own check is).
    """
    import stripe  # here: a node that never sees a webhook never loads it

    try:
        stripe.WebhookSignature.verify_header(body, signature, secret, WEBHOOK_TOLERANCE_S)
        check_signature_time(signature, time.time())
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"bad Stripe-Signature: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidWebhook("webhook body is not UTF-8 JSON") from None
    return parse_event(decode_payload(body))


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    event_type: str
    outcome: Outcome
    user_id: int | None
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.applied


class BillingService:
    """Checkout, portal and webhooks for one app; Stripe is optional (None in dev)."""

    def __init__(self, sessions: SessionFactory, catalog: PlanCatalog, *,
                 gateway: StripeGateway | None, webhook_secret: str | None,
                 public_url: str, clock: Callable[[], float]) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.gateway = gateway
        self.webhook_secret = webhook_secret
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    async def cancel_for_deletion(self, user_id: int) -> str | None:
        """Cancel the user's Stripe subscription before their account is deleted.

        Returns the cancelled subscription's id, or None if there was nothing
        to cancel. Without a Stripe key a live subscription cannot be cancelled
        here, so this raises ``BillingNotConfigured`` and the deletion stops.
        """
        async with self.sessions() as session:
            sub = await store.get_subscription(session, user_id)
        if sub is None or not sub.stripe_subscription_id or sub.status in ENDED_STATUSES:
            return None
        await self._stripe().cancel_subscription(sub.stripe_subscription_id)
        logger.info("cancelled subscription %s of user %s (account deletion)",
                    sub.stripe_subscription_id, user_id)
        return sub.stripe_subscription_id

    def _stripe(self) -> StripeGateway:
        if self.gateway is None:
            raise BillingNotConfigured("billing is not configured: set DISCO_STRIPE_API_KEY")
        return self.gateway

    async def checkout(self, user_id: int, plan_name: str) -> str:
        """A Stripe Checkout URL for ``plan_name``. Nothing is stored but the customer id."""
        plan = self.catalog.get(plan_name)
        if plan is self.catalog.default:
            raise BadRequest(
                f"the {plan.name} plan needs no checkout; to leave a paid plan, "
                "cancel it in the billing portal"
            )
        if plan.stripe_price_id is None:
            raise BillingNotConfigured(
                f"the {plan.name} plan has no stripe_price_id in the plans file"
            )
        gateway = self._stripe()
        now = self.clock()
        async with session_scope(self.sessions) as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFound("no such user")
            sub = await store.get_subscription(session, user_id)
            if sub is not None and sub.status in ACTIVE_STATUSES | GRACE_STATUSES:
                held = self.catalog.find(sub.plan)
                if held is not None and held is not self.catalog.default:
                    if held.name == plan.name:
                        raise AlreadySubscribed(f"you already have the {plan.name} plan")
                    raise AlreadySubscribed(
                        f"you already have the {held.name} plan: switch plans in the "
                        "billing portal"
                    )
            customer_id = sub.stripe_customer_id if sub is not None else None
            username = user.username
        if customer_id is None:
            customer_id = await gateway.create_customer(user_id, username)
            async with session_scope(self.sessions) as session:
                sub = await store.get_subscription(session, user_id)
                if sub is None:
                    session.add(store.new_subscription(user_id, self.catalog, now, customer_id))
                elif sub.stripe_customer_id is None:
                    sub.stripe_customer_id, sub.updated_at = customer_id, now
                    session.add(sub)
                else:
                    customer_id = sub.stripe_customer_id
        logger.info("checkout: user %s -> plan %s (customer %s)", user_id, plan.name, customer_id)
        return await gateway.create_checkout_session(
            customer_id=customer_id, price_id=plan.stripe_price_id, user_id=user_id,
            plan=plan.name,
            success_url=f"{self.public_url}/app/#billing?checkout=success"
                        "&session_id={CHECKOUT_SESSION_ID}",
            cancel_url=f"{self.public_url}/app/#billing?checkout=cancel",
        )

    async def portal(self, user_id: int) -> str:
        gateway = self._stripe()
        async with session_scope(self.sessions) as session:
            sub = await store.get_subscription(session, user_id)
            customer_id = sub.stripe_customer_id if sub is not None else None
        if customer_id is None:
            raise NoBillingAccount("no billing account yet: subscribe to a plan first")
        return await gateway.create_portal_session(
            customer_id=customer_id, return_url=f"{self.public_url}/app/#billing"
        )

    async def handle_webhook(self, body: bytes, signature: str | None) -> WebhookResult:
        """Verify, then apply once. Raises InvalidWebhook (400) with nothing changed."""
        if not self.webhook_secret:
            raise BillingNotConfigured(
                "webhooks are not configured: set DISCO_STRIPE_WEBHOOK_SECRET"
            )
        event = verify_signature(body, signature, self.webhook_secret)
        try:
            result = await self._apply(event)
        except IntegrityError:
            async with self.sessions() as session:
                if not await store.event_seen(session, event.id):
                    raise
            result = WebhookResult(event.id, event.type, Outcome.duplicate, None,
                                   "delivered concurrently; applied by the other delivery")
        log = logger.info if result.outcome in (Outcome.applied, Outcome.duplicate) else (
            logger.warning)
        log("stripe event %s %s: %s %s", event.id, event.type, result.outcome.value,
            result.reason)
        return result

    async def _resolve_user(self, session: AsyncSession, event: StripeEvent) -> int | None:
        customer = customer_of(event)
        if customer is not None:
            sub = await store.subscription_by_customer(session, customer)
            if sub is not None:
                return sub.user_id
        hint = user_hint(event)
        if hint is not None and await store.user_exists(session, hint):
            return hint
        return None

    async def _apply(self, event: StripeEvent) -> WebhookResult:
        now = self.clock()
        async with session_scope(self.sessions) as session:
            if await store.event_seen(session, event.id):
                return WebhookResult(event.id, event.type, Outcome.duplicate, None,
                                     "event id already processed")
            if event.type not in HANDLED_EVENT_TYPES:
                reason = f"event type {event.type} is not used by Disco"
                session.add(store.event_row(event, Outcome.unknown_type, None, reason, now))
                return WebhookResult(event.id, event.type, Outcome.unknown_type, None, reason)
            user_id = await self._resolve_user(session, event)
            if user_id is None:
                reason = f"no user for customer {customer_of(event)}"
                session.add(store.event_row(event, Outcome.unknown_customer, None, reason, now))
                return WebhookResult(event.id, event.type, Outcome.unknown_customer, None,
                                     reason)
            # the event row first, so a concurrent duplicate fails before any effect
            row = store.event_row(event, Outcome.applied, user_id, "", now)
            session.add(row)
            await session.flush()
            sub = await store.get_subscription(session, user_id)
            if sub is None:
                sub = store.new_subscription(user_id, self.catalog, now)
            transition = apply_event(store.state_of(sub), event, self.catalog)
            if store.write_state(sub, transition.state, now):
                session.add(sub)
            row.outcome, row.detail = transition.outcome.value, transition.reason[:512]
            session.add(row)
            await session.flush()
            return WebhookResult(event.id, event.type, transition.outcome, user_id,
                                 transition.reason)
