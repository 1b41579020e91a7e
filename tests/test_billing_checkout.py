"""Checkout and customer portal against a local HTTP server standing in for Stripe's API.

The stripe package's base URL is pointed at 127.0.0.1; each test checks the
request the server sent (path, form fields, auth, idempotency key) and the
rows it left behind.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from billing.errors import (
    AlreadySubscribed,
    BillingNotConfigured,
    NoBillingAccount,
    StripeFailed,
    UnknownPlan,
)
from billing.models import Subscription
from billing.plans import BUILTIN_PLANS, parse_catalog
from billing.service import BillingService
from billing.stripe_api import StripeGateway
from common.db import SessionFactory
from common.errors import BadRequest
from tests.billing_support import (
    PLANS_TOML,
    PRICE_PLUS,
    WEBHOOK_SECRET,
    FakeStripe,
    body,
    fake_stripe,
    migrated_with_user,
    sign,
    subscription_event,
)

API_KEY = "sk_test_disco_123"
CATALOG = parse_catalog(tomllib.loads(PLANS_TOML))


@dataclass
class Env:
    sessions: SessionFactory
    billing: BillingService
    stripe: FakeStripe
    user_id: int

    async def subscription(self) -> Subscription | None:
        async with self.sessions() as session:
            return await session.get(Subscription, self.user_id)


@pytest.fixture
def stripe_server() -> Iterator[FakeStripe]:
    with fake_stripe() as fake:
        yield fake


@pytest.fixture
async def env(sqlite_url: str, stripe_server: FakeStripe) -> AsyncIterator[Env]:
    engine, sessions, user_id = await migrated_with_user(sqlite_url)
    gateway = StripeGateway(API_KEY, api_base=stripe_server.url, max_network_retries=0)
    billing = BillingService(sessions, CATALOG, gateway=gateway, webhook_secret=WEBHOOK_SECRET,
                             public_url="https://disco.example", clock=time.time)
    yield Env(sessions, billing, stripe_server, user_id)
    await engine.dispose()


async def test_checkout_creates_customer_then_session(env: Env) -> None:
    url = await env.billing.checkout(env.user_id, "plus")
    assert url == "https://checkout.stripe.test/c/pay/cs_test_2"
    customer, session = env.stripe.requests
    assert customer.path == "/v1/customers"
    assert customer.headers["authorization"] == f"Bearer {API_KEY}"
    assert customer.headers["idempotency-key"] == f"disco-customer-{env.user_id}"
    assert customer.form == {"name": "ada", "metadata[user_id]": str(env.user_id)}
    assert session.path == "/v1/checkout/sessions"
    uid = str(env.user_id)
    assert session.form == {
        "mode": "subscription",
        "customer": "cus_test1",
        "client_reference_id": uid,
        "line_items[0][price]": PRICE_PLUS,
        "line_items[0][quantity]": "1",
        "success_url": "https://disco.example/app/#billing?checkout=success"
                       "&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://disco.example/app/#billing?checkout=cancel",
        "metadata[user_id]": uid,
        "metadata[plan]": "plus",
        "subscription_data[metadata][user_id]": uid,
        "subscription_data[metadata][plan]": "plus",
    }
    sub = await env.subscription()
    assert sub is not None
    assert (sub.stripe_customer_id, sub.plan, sub.status) == ("cus_test1", "free", "none")


async def test_second_checkout_reuses_the_customer(env: Env) -> None:
    await env.billing.checkout(env.user_id, "plus")
    await env.billing.checkout(env.user_id, "pro")
    paths = [r.path for r in env.stripe.requests]
    assert paths == ["/v1/customers", "/v1/checkout/sessions", "/v1/checkout/sessions"]
    assert env.stripe.requests[2].form["customer"] == "cus_test1"


async def test_checkout_for_a_plan_you_already_have(env: Env) -> None:
    await env.billing.checkout(env.user_id, "plus")
    payload = body(subscription_event("evt_1", int(time.time()), customer="cus_test1"))
    await env.billing.handle_webhook(payload, sign(payload))
    before = await env.subscription()
    sent = len(env.stripe.requests)
    with pytest.raises(AlreadySubscribed, match="already have the plus plan"):
        await env.billing.checkout(env.user_id, "plus")
    with pytest.raises(AlreadySubscribed, match="billing portal"):
        await env.billing.checkout(env.user_id, "pro")
    assert len(env.stripe.requests) == sent  # nothing sent to Stripe
    assert await env.subscription() == before


@pytest.mark.parametrize(("plan", "error"), [("gold", UnknownPlan), ("free", BadRequest),
                                             ("", UnknownPlan)])
async def test_bad_plans_send_nothing(env: Env, plan: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await env.billing.checkout(env.user_id, plan)
    assert env.stripe.requests == []
    assert await env.subscription() is None


async def test_stripe_error_is_reported_clearly(env: Env) -> None:
    env.stripe.fail_next = 1
    with pytest.raises(StripeFailed, match="No such price"):
        await env.billing.checkout(env.user_id, "plus")
    assert await env.subscription() is None


async def test_portal(env: Env) -> None:
    with pytest.raises(NoBillingAccount):
        await env.billing.portal(env.user_id)
    assert env.stripe.requests == []
    await env.billing.checkout(env.user_id, "plus")
    url = await env.billing.portal(env.user_id)
    assert url.startswith("https://billing.stripe.test/p/session/")
    portal = env.stripe.requests[-1]
    assert portal.path == "/v1/billing_portal/sessions"
    assert portal.form == {"customer": "cus_test1",
                           "return_url": "https://disco.example/app/#billing"}


async def test_plan_without_a_price(env: Env) -> None:
    env.billing.catalog = parse_catalog(BUILTIN_PLANS)  # built-in plus names no price
    with pytest.raises(BillingNotConfigured, match="no stripe_price_id"):
        await env.billing.checkout(env.user_id, "plus")
    assert env.stripe.requests == []


async def test_without_stripe_configured(env: Env) -> None:
    env.billing.gateway = None
    with pytest.raises(BillingNotConfigured, match="DISCO_STRIPE_API_KEY"):
        await env.billing.checkout(env.user_id, "plus")
    with pytest.raises(BillingNotConfigured):
        await env.billing.portal(env.user_id)
