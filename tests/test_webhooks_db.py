"""Signed webhooks through the billing service into a real database (SQLite and PostgreSQL).

Each test signs bodies exactly as Stripe does and then reads the subscription
row and the webhook_events table back, so "nothing changed" is checked, not
assumed.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from billing.entitlements import DAY_S, GRACE_PERIOD_S
from billing.errors import BillingNotConfigured, InvalidWebhook
from billing.models import Subscription, WebhookEvent
from billing.plans import PlanCatalog, parse_catalog
from billing.service import (
    BillingService,
    entitlements_for_group,
    entitlements_for_user,
    history_cutoffs,
)
from billing.webhooks import WEBHOOK_TOLERANCE_S, Outcome
from common.db import SessionFactory, session_scope
from groups.models import User
from groups.service import create_group
from tests.billing_support import (
    PLANS_TOML,
    WEBHOOK_SECRET,
    body,
    checkout_event,
    envelope,
    invoice_event,
    migrated_with_user,
    sign,
    subscription_event,
)

CATALOG: PlanCatalog = parse_catalog(tomllib.loads(PLANS_TOML))


@dataclass
class Env:
    sessions: SessionFactory
    billing: BillingService
    user_id: int

    async def deliver(self, event: dict[str, Any]) -> Outcome:
        payload = body(event)
        return (await self.billing.handle_webhook(payload, sign(payload))).outcome

    async def subscription(self) -> Subscription | None:
        async with self.sessions() as session:
            return await session.get(Subscription, self.user_id)

    async def events(self) -> list[tuple[str, str]]:
        async with self.sessions() as session:
            rows = await session.exec(select(WebhookEvent).order_by(col(WebhookEvent.received_at),
                                                                    col(WebhookEvent.id)))
            return [(row.id, row.outcome) for row in rows.all()]

    async def event_count(self) -> int:
        async with self.sessions() as session:
            rows = await session.exec(select(func.count()).select_from(WebhookEvent))
            return int(rows.one())


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    engine, sessions, user_id = await migrated_with_user(database_url)
    async with session_scope(sessions) as session:
        # the customer id is stored at checkout time, before Stripe sends anything
        session.add(Subscription(user_id=user_id, stripe_customer_id="cus_1", plan="free",
                                 status="none", updated_at=0.0))
    billing = BillingService(sessions, CATALOG, gateway=None, webhook_secret=WEBHOOK_SECRET,
                             public_url="http://127.0.0.1:8080", clock=time.time)
    yield Env(sessions, billing, user_id)
    await engine.dispose()


T = int(time.time()) - 3600  # event ``created`` times; signing uses the current time


async def test_valid_lifecycle_upgrades_the_owner_and_their_groups(env: Env) -> None:
    async with session_scope(env.sessions) as session:
        group = await create_group(session, env.user_id, "crew", 0.0)
        assert group.id is not None
        group_id = group.id
    for event in (
        checkout_event("evt_1", T, user_id=env.user_id),
        subscription_event("evt_2", T, kind="created", status="active", period_end=T + 86400 * 30),
        invoice_event("evt_3", T),
    ):
        assert await env.deliver(event) is Outcome.applied
    sub = await env.subscription()
    assert sub is not None
    assert (sub.plan, sub.status, sub.stripe_subscription_id) == ("plus", "active", "sub_1")
    assert sub.current_period_end == T + 86400 * 30
    assert [o for _, o in await env.events()] == ["applied"] * 3
    async with session_scope(env.sessions) as session:
        other = User(username="bo", display_name="Bo", password_hash="x", created_at=0.0)
        session.add(other)
        await session.flush()
        assert other.id is not None
        other_group = await create_group(session, other.id, "other", 0.0)
    now = time.time()
    async with env.sessions() as session:
        ent = await entitlements_for_group(session, group_id, now, CATALOG)
        cutoffs = await history_cutoffs(session, now, CATALOG)
    assert (ent.plan, ent.max_group_members, ent.music) == ("plus", 25, True)
    assert cutoffs == {group_id: now - 30 * DAY_S, other_group.id: now - DAY_S}


async def test_forged_signature_is_refused_and_changes_nothing(env: Env) -> None:
    event = subscription_event("evt_forged", T, status="active")
    payload = body(event)
    with pytest.raises(InvalidWebhook, match="Stripe-Signature"):
        await env.billing.handle_webhook(payload, sign(payload, secret="whsec_attacker"))
    # a genuine signature over a different body
    other = body(subscription_event("evt_other", T, status="canceled"))
    with pytest.raises(InvalidWebhook):
        await env.billing.handle_webhook(payload, sign(other))
    for header in (None, "", "garbage", "t=abc,v1=00"):
        with pytest.raises(InvalidWebhook):
            await env.billing.handle_webhook(payload, header)
    sub = await env.subscription()
    assert sub is not None and (sub.plan, sub.status) == ("free", "none")
    assert await env.event_count() == 0


async def test_stale_signature_outside_tolerance(env: Env) -> None:
    payload = body(subscription_event("evt_old", T, status="active"))
    old = int(time.time()) - WEBHOOK_TOLERANCE_S - 5
    with pytest.raises(InvalidWebhook, match="tolerance"):
        await env.billing.handle_webhook(payload, sign(payload, timestamp=old))
    assert await env.event_count() == 0
    sub = await env.subscription()
    assert sub is not None and sub.status == "none"
    # just inside the window is accepted
    recent = int(time.time()) - WEBHOOK_TOLERANCE_S + 30
    result = await env.billing.handle_webhook(payload, sign(payload, timestamp=recent))
    assert result.outcome is Outcome.applied


@pytest.mark.parametrize("ahead_s", [WEBHOOK_TOLERANCE_S + 5, 86_400])
async def test_signature_dated_in_the_future_is_refused(env: Env, ahead_s: int) -> None:
    payload = body(subscription_event("evt_future", T, status="active"))
    future = int(time.time()) + ahead_s
    with pytest.raises(InvalidWebhook, match="tolerance"):
        await env.billing.handle_webhook(payload, sign(payload, timestamp=future))
    assert await env.event_count() == 0
    sub = await env.subscription()
    assert sub is not None and sub.status == "none"
    # a little clock skew the other way is fine
    soon = int(time.time()) + WEBHOOK_TOLERANCE_S - 30
    result = await env.billing.handle_webhook(payload, sign(payload, timestamp=soon))
    assert result.outcome is Outcome.applied


async def test_replayed_event_is_applied_once(env: Env) -> None:
    failed = invoice_event("evt_fail", T, paid=False)
    assert await env.deliver(subscription_event("evt_a", T - 10, status="active")) \
        is Outcome.applied
    assert await env.deliver(failed) is Outcome.applied
    first = await env.subscription()
    assert first is not None and first.grace_until == T + GRACE_PERIOD_S
    # a later recovery, then the failure replayed: the replay must not re-apply
    assert await env.deliver(invoice_event("evt_paid", T + 1)) is Outcome.applied
    assert await env.deliver(failed) is Outcome.duplicate
    sub = await env.subscription()
    assert sub is not None and (sub.status, sub.grace_until) == ("active", None)
    assert await env.event_count() == 3


async def test_concurrent_duplicate_deliveries_apply_once(env: Env) -> None:
    event = subscription_event("evt_dup", T, status="active")
    outcomes = await asyncio.gather(*(env.deliver(event) for _ in range(3)))
    assert sorted(outcomes) == sorted([Outcome.applied, Outcome.duplicate, Outcome.duplicate])
    assert await env.events() == [("evt_dup", "applied")]


async def test_out_of_order_events_never_roll_back(env: Env) -> None:
    deleted = subscription_event("evt_del", T + 300, kind="deleted", status="canceled")
    active = subscription_event("evt_act", T + 1, status="active")
    paid = invoice_event("evt_paid", T + 2)
    assert await env.deliver(deleted) is Outcome.applied
    assert await env.deliver(active) is Outcome.stale
    assert await env.deliver(paid) is Outcome.stale
    sub = await env.subscription()
    assert sub is not None and (sub.plan, sub.status) == ("free", "canceled")
    assert sub.last_event_created == T + 300
    assert dict(await env.events()) == {"evt_del": "applied", "evt_act": "stale",
                                        "evt_paid": "stale"}
    async with env.sessions() as session:
        assert (await entitlements_for_user(session, env.user_id, time.time(), CATALOG)).plan \
            == "free"


async def test_grace_period_then_downgrade(env: Env) -> None:
    assert await env.deliver(subscription_event("evt_a", T, status="active")) is Outcome.applied
    assert await env.deliver(invoice_event("evt_f", T + 5, paid=False)) is Outcome.applied
    async with env.sessions() as session:
        inside = await entitlements_for_user(session, env.user_id, T + 10, CATALOG)
        after = await entitlements_for_user(session, env.user_id, T + 5 + GRACE_PERIOD_S, CATALOG)
    assert (inside.plan, inside.in_grace) == ("plus", True)
    assert (after.plan, after.status) == ("free", "past_due")


async def test_body_that_is_not_json_is_refused(env: Env) -> None:
    for payload in (b"not json at all", b"\xff\xfe\x00", b"[]", b'{"id": "evt_x"}'):
        with pytest.raises(InvalidWebhook):
            await env.billing.handle_webhook(payload, sign(payload))
    assert await env.event_count() == 0


async def test_unknown_event_types_are_acknowledged_and_recorded(env: Env) -> None:
    event = envelope("evt_u", "customer.created", T, {"id": "cus_1", "customer": "cus_1"})
    assert await env.deliver(event) is Outcome.unknown_type
    assert await env.deliver(subscription_event("evt_s", T, customer="cus_nobody")) \
        is Outcome.unknown_customer
    assert dict(await env.events()) == {"evt_u": "unknown_type", "evt_s": "unknown_customer"}
    sub = await env.subscription()
    assert sub is not None and (sub.plan, sub.status) == ("free", "none")


async def test_webhooks_refused_when_no_secret_is_configured(env: Env) -> None:
    env.billing.webhook_secret = None
    payload = body(subscription_event("evt_a", T))
    with pytest.raises(BillingNotConfigured):
        await env.billing.handle_webhook(payload, sign(payload))
    assert await env.event_count() == 0
