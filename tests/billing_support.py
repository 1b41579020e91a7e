"""Stripe-shaped events, Stripe's signing scheme, and a local stand-in for Stripe's API.

The signature is computed here from Stripe's documented scheme (HMAC-SHA256 of
``"{t}.{payload}"`` with the endpoint secret, header ``t=...,v1=...``), not with
the stripe package, so the server's verification is checked against an
independent implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import SessionFactory
from common.settings import Settings
from tests.db_support import migrated_with_users
from tests.fake_http import json_server

PRICE_PLUS = "price_plus_test"
PRICE_PRO = "price_pro_test"
WEBHOOK_SECRET = "whsec_test_" + "a" * 24

PLANS_TOML = f"""
default = "free"

[plans.free]
max_group_members = 5
voice = true
music = false
history_days = 1
max_places = 2

[plans.plus]
display_name = "Disco Plus"
stripe_price_id = "{PRICE_PLUS}"
max_group_members = 25
voice = true
music = true
history_days = 30
max_places = "unlimited"

[plans.pro]
stripe_price_id = "{PRICE_PRO}"
max_group_members = 100
voice = true
music = true
history_days = 365
max_places = "unlimited"
"""


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header exactly as Stripe computes it."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def envelope(event_id: str, event_type: str, created: int, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil",
        "created": created, "type": event_type, "livemode": False, "pending_webhooks": 1,
        "data": {"object": obj},
    }


def subscription_event(
    event_id: str, created: int, *, kind: str = "updated", sub_id: str = "sub_1",
    customer: str = "cus_1", status: str = "active", price: str = PRICE_PLUS,
    period_end: int | None = None, user_id: int | None = None, plan: str | None = None,
) -> dict[str, Any]:
    meta = {k: str(v) for k, v in (("user_id", user_id), ("plan", plan)) if v is not None}
    item: dict[str, Any] = {"id": "si_1", "object": "subscription_item",
                            "price": {"id": price, "object": "price"}}
    if period_end is not None:
        item["current_period_end"] = period_end
    obj = {"id": sub_id, "object": "subscription", "customer": customer, "status": status,
           "cancel_at_period_end": False, "metadata": meta,
           "items": {"object": "list", "data": [item]}}
    return envelope(event_id, f"customer.subscription.{kind}", created, obj)


def invoice_event(
    event_id: str, created: int, *, paid: bool = True, sub_id: str = "sub_1",
    customer: str = "cus_1", period_end: int | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "in_" + event_id, "object": "invoice", "customer": customer,
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": sub_id}},
    }
    if period_end is not None:
        obj["lines"] = {"data": [{"period": {"start": period_end - 30 * 86400,
                                             "end": period_end}}]}
    kind = "invoice.paid" if paid else "invoice.payment_failed"
    return envelope(event_id, kind, created, obj)


def checkout_event(
    event_id: str, created: int, *, user_id: int, plan: str = "plus", sub_id: str = "sub_1",
    customer: str = "cus_1", payment_status: str = "paid",
) -> dict[str, Any]:
    obj = {"id": "cs_" + event_id, "object": "checkout.session", "mode": "subscription",
           "customer": customer, "subscription": sub_id, "client_reference_id": str(user_id),
           "payment_status": payment_status, "status": "complete",
           "metadata": {"user_id": str(user_id), "plan": plan}}
    return envelope(event_id, "checkout.session.completed", created, obj)


def body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


@dataclass
class StripeRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeStripe:
    """Records what the server sent; answers like Stripe's API for the few calls we make."""

    url: str = ""
    requests: list[StripeRequest] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with a Stripe API error

    def handle(self, req: StripeRequest) -> tuple[int, dict[str, Any]]:
        self.requests.append(req)
        if self.fail_next:
            self.fail_next -= 1
            return 400, {"error": {"type": "invalid_request_error",
                                   "message": "No such price: 'price_nope'"}}
        n = len(self.requests)
        if req.path == "/v1/customers":
            return 200, {"id": f"cus_test{n}", "object": "customer",
                         "email": req.form.get("email")}
        if req.path == "/v1/checkout/sessions":
            return 200, {"id": f"cs_test_{n}", "object": "checkout.session",
                         "url": f"https://checkout.stripe.test/c/pay/cs_test_{n}",
                         "mode": req.form.get("mode")}
        if req.method == "DELETE" and req.path.startswith("/v1/subscriptions/"):
            sub_id = req.path.rsplit("/", 1)[1]
            return 200, {"id": sub_id, "object": "subscription", "status": "canceled"}
        if req.path == "/v1/billing_portal/sessions":
            return 200, {"id": f"bps_{n}", "object": "billing_portal.session",
                         "url": f"https://billing.stripe.test/p/session/bps_{n}"}
        return 404, {"error": {"type": "invalid_request_error", "message": "unknown path"}}


@contextmanager
def fake_stripe() -> Iterator[FakeStripe]:
    """A local HTTP server standing in for https://api.stripe.com."""
    fake = FakeStripe()

    def respond(method: str, path: str, headers: Mapping[str, str], raw: bytes
                ) -> tuple[int, Any]:
        form = dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
        return fake.handle(StripeRequest(method, path, dict(headers), form))

    with json_server(respond, {"Request-Id": "req_test"}) as url:
        fake.url = url
        yield fake


async def migrated_with_user(url: str) -> tuple[AsyncEngine, SessionFactory, int]:
    """A migrated database holding one user, "ada"; returns the engine, sessions, her id."""
    engine, sessions, (ada,) = await migrated_with_users(url, "ada")
    return engine, sessions, ada


def billing_settings(settings: Settings, tmp_path: Path, database_url: str,
                     stripe_url: str) -> Settings:
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS_TOML)
    return settings.model_copy(update={
        "database_url": database_url, "plans_file": plans, "stripe_api_key": "sk_test_123",
        "stripe_api_base": stripe_url, "stripe_webhook_secret": WEBHOOK_SECRET,
        "public_url": "https://disco.example",
    })
