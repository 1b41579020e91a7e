"""Stripe webhook event -> subscription state transition. Pure.

Stripe delivers events at least once and in no particular order, so this
module never trusts arrival order: every applied event records its
``created`` timestamp, and an event older than the last one applied is
*stale*. A stale event may still fill in identifiers that never change once
set (customer id, subscription id), because those cannot roll anything back,
but it never touches plan, status, period or grace. Events created in the same
second as the last applied one are applied (Stripe emits checkout, subscription
and invoice events within one second; refusing equal timestamps would drop
real updates).

Replays (the same event id twice) are not decided here: the store inserts the
event id under a unique constraint in the same transaction as the effect.

Handled types: ``checkout.session.completed``,
``customer.subscription.created|updated|deleted``, ``invoice.paid``,
``invoice.payment_failed``. Anything else is acknowledged and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from billing.entitlements import ACTIVE_STATUSES, GRACE_PERIOD_S, GRACE_STATUSES, KNOWN_STATUSES
from billing.errors import InvalidWebhook
from billing.plans import PlanCatalog

WEBHOOK_TOLERANCE_S = 300  # Stripe's default signature tolerance, both ways
EVENT_ID_MAX_CHARS = 255

CHECKOUT_COMPLETED = "checkout.session.completed"
SUBSCRIPTION_CREATED = "customer.subscription.created"
SUBSCRIPTION_UPDATED = "customer.subscription.updated"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
INVOICE_PAID = "invoice.paid"
INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
HANDLED_EVENT_TYPES = frozenset({
    CHECKOUT_COMPLETED, SUBSCRIPTION_CREATED, SUBSCRIPTION_UPDATED, SUBSCRIPTION_DELETED,
    INVOICE_PAID, INVOICE_PAYMENT_FAILED,
})


class Outcome(StrEnum):
    """What became of a delivery; stored with the event id and shown to admins."""

    applied = "applied"
    stale = "stale"  # older than the last applied event: no rollback
    duplicate = "duplicate"  # event id seen before (decided by the store)
    ignored = "ignored"  # handled type, but nothing to do (e.g. a one-off payment)
    unknown_type = "unknown_type"
    unknown_customer = "unknown_customer"
    other_subscription = "other_subscription"  # about a subscription the user no longer uses


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int
    obj: Mapping[str, Any]


@dataclass(frozen=True)
class SubscriptionState:
    """The fields of a user's subscription an event can change."""

    plan: str
    status: str = "none"
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    current_period_end: float | None = None
    grace_until: float | None = None
    cancel_at_period_end: bool = False
    last_event_created: int = 0


@dataclass(frozen=True)
class Transition:
    outcome: Outcome
    state: SubscriptionState
    reason: str = ""


def check_signature_time(signature: str | None, now: float,
                         tolerance_s: float = WEBHOOK_TOLERANCE_S) -> None:
    """InvalidWebhook unless the header's signing time is within ``tolerance_s`` of ``now``.

    Stripe's library checks only the past side (a signature too old); a
    signature dated in the future would be accepted for ever, so this checks
    both. It reads the first ``t=`` item, the one Stripe's check verifies.
    """
    items = (item.split("=", 1) for item in (signature or "").split(","))
    stamps = [value for key, *rest in items for value in rest if key.strip() == "t"]
    if not stamps or not stamps[0].isascii() or not stamps[0].isdigit() or len(stamps[0]) > 12:
        raise InvalidWebhook("bad Stripe-Signature: no timestamp")
    signed_at = int(stamps[0])
    if abs(now - signed_at) > tolerance_s:
        raise InvalidWebhook(
            f"bad Stripe-Signature: signed {signed_at - now:+.0f} s from now, outside the "
            f"tolerance of {tolerance_s:g} s")


def decode_payload(body: bytes | str) -> dict[str, Any]:
    """The JSON object in a (signature-checked) body, or InvalidWebhook."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidWebhook(f"webhook body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidWebhook("webhook body is not a JSON object")
    return raw


def parse_event(raw: Mapping[str, Any]) -> StripeEvent:
    """Check the envelope fields every Stripe event has."""
    event_id, event_type, created = raw.get("id"), raw.get("type"), raw.get("created")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= EVENT_ID_MAX_CHARS:
        raise InvalidWebhook("event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidWebhook("event has no type")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise InvalidWebhook("event has no created timestamp")
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise InvalidWebhook("event has no data.object")
    return StripeEvent(event_id, event_type, created, obj)


def _id_of(value: Any) -> str | None:
    """Stripe fields may hold an id or, when expanded, the object itself."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def customer_of(event: StripeEvent) -> str | None:
    return _id_of(event.obj.get("customer"))


def user_hint(event: StripeEvent) -> int | None:
    """The Disco user id we put on the checkout session / subscription, if any."""
    for value in (event.obj.get("client_reference_id"), _metadata(event.obj).get("user_id")):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _subscription_of_invoice(obj: Mapping[str, Any]) -> str | None:
    found = _id_of(obj.get("subscription"))  # API versions before 2025-03
    if found is None:
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping):
            found = _id_of(details.get("subscription"))
    return found


def _items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _price_ids(obj: Mapping[str, Any]) -> list[str]:
    ids = []
    for item in _items(obj):
        price = item.get("price") if isinstance(item.get("price"), Mapping) else item.get("plan")
        if isinstance(price, Mapping) and isinstance(price.get("id"), str):
            ids.append(price["id"])
    return ids


def _period_end(obj: Mapping[str, Any]) -> float | None:
    """``current_period_end`` moved from the subscription to its items in 2025 APIs."""
    ends = [obj.get("current_period_end")] + [i.get("current_period_end") for i in _items(obj)]
    values = [float(v) for v in ends if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(values) if values else None


def _invoice_period_end(obj: Mapping[str, Any]) -> float | None:
    lines = obj.get("lines")
    data = lines.get("data") if isinstance(lines, Mapping) else None
    ends = []
    for line in data if isinstance(data, list) else []:
        period = line.get("period") if isinstance(line, Mapping) else None
        end = period.get("end") if isinstance(period, Mapping) else None
        if isinstance(end, int | float) and not isinstance(end, bool):
            ends.append(float(end))
    return max(ends) if ends else None


def _plan_for_subscription(obj: Mapping[str, Any], catalog: PlanCatalog, current: str) -> str:
    """The price decides (the portal can switch prices); our metadata is the fallback."""
    for price_id in _price_ids(obj):
        plan = catalog.by_price(price_id)
        if plan is not None:
            return plan.name
    meta_plan = _metadata(obj).get("plan")
    if isinstance(meta_plan, str) and meta_plan in catalog:
        return meta_plan
    return current


def _fill_ids(state: SubscriptionState, customer: str | None,
              subscription: str | None) -> SubscriptionState:
    return replace(
        state,
        stripe_customer_id=state.stripe_customer_id or customer,
        stripe_subscription_id=state.stripe_subscription_id or subscription,
    )


def _grace_for(status: str, state: SubscriptionState, created: int,
               grace_period_s: float) -> float | None:
    if status in GRACE_STATUSES:
        return state.grace_until if state.grace_until is not None else created + grace_period_s
    return None


def _on_checkout(state: SubscriptionState, event: StripeEvent,
                 catalog: PlanCatalog) -> Transition:
    obj = event.obj
    if obj.get("mode") != "subscription":
        return Transition(Outcome.ignored, state, f"checkout mode {obj.get('mode')!r}")
    sub_id = _id_of(obj.get("subscription"))
    new = replace(_fill_ids(state, customer_of(event), sub_id), stripe_subscription_id=sub_id
                  or state.stripe_subscription_id, last_event_created=event.created)
    plan = _metadata(obj).get("plan")
    if isinstance(plan, str) and plan in catalog:
        new = replace(new, plan=plan)
    if obj.get("payment_status") in ("paid", "no_payment_required"):
        new = replace(new, status="active", grace_until=None)
    return Transition(Outcome.applied, new, "checkout completed")


def _on_subscription(state: SubscriptionState, event: StripeEvent, catalog: PlanCatalog,
                     grace_period_s: float) -> Transition:
    obj = event.obj
    sub_id = _id_of(obj.get("id"))
    status = obj.get("status") if obj.get("status") in KNOWN_STATUSES else None
    if sub_id is None or status is None:
        return Transition(Outcome.ignored, state, "subscription without id or known status")
    deleted = event.type == SUBSCRIPTION_DELETED
    current = state.stripe_subscription_id
    if current is not None and sub_id != current:
        keeps_current = state.status in ACTIVE_STATUSES | GRACE_STATUSES
        if deleted or (keeps_current and status not in ACTIVE_STATUSES):
            return Transition(Outcome.other_subscription, state,
                              f"event is about {sub_id}, the user's subscription is {current}")
    if deleted:
        new = replace(state, stripe_subscription_id=sub_id, status="canceled",
                      plan=catalog.default.name, grace_until=None, cancel_at_period_end=False,
                      last_event_created=event.created)
        return Transition(Outcome.applied, _fill_ids(new, customer_of(event), None),
                          "subscription ended")
    new = replace(
        state,
        stripe_subscription_id=sub_id,
        status=status,
        plan=_plan_for_subscription(obj, catalog, state.plan),
        current_period_end=_period_end(obj) or state.current_period_end,
        grace_until=_grace_for(status, state, event.created, grace_period_s),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        last_event_created=event.created,
    )
    return Transition(Outcome.applied, _fill_ids(new, customer_of(event), None),
                      f"subscription {status}")


def _on_invoice(state: SubscriptionState, event: StripeEvent,
                grace_period_s: float) -> Transition:
    sub_id = _subscription_of_invoice(event.obj)
    if sub_id is None:
        return Transition(Outcome.ignored, state, "invoice not for a subscription")
    if state.stripe_subscription_id is not None and sub_id != state.stripe_subscription_id:
        return Transition(Outcome.other_subscription, state,
                          f"invoice for {sub_id}, the user's subscription is "
                          f"{state.stripe_subscription_id}")
    if state.status == "canceled":
        return Transition(Outcome.ignored, state, "invoice for a canceled subscription")
    base = _fill_ids(state, customer_of(event), sub_id)
    if event.type == INVOICE_PAID:
        period_end = _invoice_period_end(event.obj)
        if period_end is not None and state.current_period_end is not None:
            period_end = max(period_end, state.current_period_end)
        new = replace(base, status="active", grace_until=None,
                      current_period_end=period_end or state.current_period_end,
                      last_event_created=event.created)
        return Transition(Outcome.applied, new, "invoice paid")
    grace = state.grace_until if state.grace_until is not None else event.created + grace_period_s
    new = replace(base, status="past_due", grace_until=grace, last_event_created=event.created)
    return Transition(Outcome.applied, new, "payment failed: grace period running")


def apply_event(
    state: SubscriptionState,
    event: StripeEvent,
    catalog: PlanCatalog,
    grace_period_s: float = GRACE_PERIOD_S,
) -> Transition:
    """The state after ``event``, and what happened. Never raises for odd events."""
    if event.type not in HANDLED_EVENT_TYPES:
        return Transition(Outcome.unknown_type, state, f"event type {event.type} not handled")
    if event.created < state.last_event_created:
        if event.type == CHECKOUT_COMPLETED:
            sub_id = _id_of(event.obj.get("subscription"))
        elif event.type.startswith("customer.subscription."):
            sub_id = _id_of(event.obj.get("id"))
        else:
            sub_id = _subscription_of_invoice(event.obj)
        filled = _fill_ids(state, customer_of(event), sub_id)
        return Transition(Outcome.stale, filled,
                          f"created {event.created} is older than the last applied "
                          f"event ({state.last_event_created})")
    if event.type == CHECKOUT_COMPLETED:
        return _on_checkout(state, event, catalog)
    if event.type.startswith("customer.subscription."):
        return _on_subscription(state, event, catalog, grace_period_s)
    return _on_invoice(state, event, grace_period_s)
