"""Webhook event -> subscription state, pure and table-driven (no event loop, no DB).

Sequences are fed in arrival order; the expected state is what a correct
reading of Stripe's timeline gives, whatever the arrival order.
"""

from __future__ import annotations

import itertools
import tomllib
from typing import Any

import pytest

from billing.entitlements import GRACE_PERIOD_S
from billing.errors import InvalidWebhook
from billing.plans import parse_catalog
from billing.webhooks import (
    Outcome,
    SubscriptionState,
    apply_event,
    check_signature_time,
    decode_payload,
    parse_event,
    user_hint,
)
from tests.billing_support import (
    PLANS_TOML,
    PRICE_PRO,
    checkout_event,
    envelope,
    invoice_event,
    subscription_event,
)

CATALOG = parse_catalog(tomllib.loads(PLANS_TOML))
T = 1_700_000_000
START = SubscriptionState(plan="free", stripe_customer_id="cus_1")


def run(events: list[dict[str, Any]], state: SubscriptionState = START
        ) -> tuple[SubscriptionState, list[Outcome]]:
    outcomes = []
    for raw in events:
        transition = apply_event(state, parse_event(raw), CATALOG)
        state = transition.state
        outcomes.append(transition.outcome)
    return state, outcomes


CREATED = subscription_event("evt_c", T, kind="created", status="incomplete")
ACTIVE = subscription_event("evt_a", T + 1, status="active", period_end=T + 30 * 86400)
CHECKOUT = checkout_event("evt_co", T + 1, user_id=7)
PAID = invoice_event("evt_p", T + 1)
FAILED = invoice_event("evt_f", T + 100, paid=False)
PAST_DUE = subscription_event("evt_pd", T + 101, status="past_due")
PAID_AGAIN = invoice_event("evt_p2", T + 200)
RECOVERED = subscription_event("evt_r", T + 201, status="active")
DELETED = subscription_event("evt_d", T + 300, kind="deleted", status="canceled")


@pytest.mark.parametrize(
    ("events", "plan", "status", "grace_until"),
    [
        ([CREATED], "plus", "incomplete", None),
        ([CREATED, ACTIVE, CHECKOUT, PAID], "plus", "active", None),
        ([FAILED], "free", "past_due", T + 100 + GRACE_PERIOD_S),
        ([ACTIVE, FAILED, PAST_DUE], "plus", "past_due", T + 100 + GRACE_PERIOD_S),
        ([ACTIVE, FAILED, PAST_DUE, PAID_AGAIN, RECOVERED], "plus", "active", None),
        ([ACTIVE, DELETED], "free", "canceled", None),
        # out of order: the older "active" arriving after "deleted" must not resurrect it
        ([DELETED, ACTIVE], "free", "canceled", None),
        ([DELETED, CREATED, CHECKOUT, PAID, ACTIVE], "free", "canceled", None),
        # the recovery arrives before the failure it recovers from
        ([ACTIVE, RECOVERED, PAID_AGAIN, PAST_DUE, FAILED], "plus", "active", None),
    ],
)
def test_sequences(events: list[dict[str, Any]], plan: str, status: str,
                   grace_until: float | None) -> None:
    state, _ = run(events)
    assert (state.plan, state.status, state.grace_until) == (plan, status, grace_until)


def test_every_arrival_order_of_a_lifecycle_ends_in_the_same_state() -> None:
    lifecycle = [CREATED, ACTIVE, FAILED, PAST_DUE, PAID_AGAIN, RECOVERED]
    results = set()
    for order in itertools.permutations(lifecycle):
        state, _ = run(list(order))
        results.add((state.plan, state.status, state.grace_until, state.stripe_subscription_id))
    assert results == {("plus", "active", None, "sub_1")}


def test_stale_events_are_reported_and_change_nothing_but_missing_ids() -> None:
    state, outcomes = run([RECOVERED, FAILED])
    assert outcomes == [Outcome.applied, Outcome.stale]
    assert state.status == "active"
    bare = SubscriptionState(plan="plus", status="active", last_event_created=T + 500)
    after, outcomes = run([CHECKOUT], bare)
    assert outcomes == [Outcome.stale]
    assert (after.stripe_customer_id, after.stripe_subscription_id) == ("cus_1", "sub_1")
    assert (after.plan, after.status, after.last_event_created) == ("plus", "active", T + 500)


def test_plan_comes_from_the_price_so_portal_switches_apply() -> None:
    switched = subscription_event("evt_s", T + 10, price=PRICE_PRO, plan="plus")
    state, _ = run([ACTIVE, switched])
    assert state.plan == "pro"
    unknown = subscription_event("evt_u", T + 20, price="price_unknown", plan=None)
    state, _ = run([unknown], state)
    assert state.plan == "pro"  # unknown price: keep what we had rather than guess


def test_period_end_is_read_from_items_and_invoices() -> None:
    state, _ = run([ACTIVE])
    assert state.current_period_end == T + 30 * 86400
    renewed = invoice_event("evt_rn", T + 30 * 86400, period_end=T + 60 * 86400)
    state, _ = run([renewed], state)
    assert state.current_period_end == T + 60 * 86400


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        # a delayed deletion of an old subscription must not cancel the new one
        (subscription_event("e1", T, sub_id="sub_new"),
         subscription_event("e2", T + 5, kind="deleted", sub_id="sub_old", status="canceled"),
         Outcome.other_subscription),
        (subscription_event("e1", T, sub_id="sub_new"),
         invoice_event("e2", T + 5, paid=False, sub_id="sub_old"), Outcome.other_subscription),
        # after a cancel, a new subscription takes over
        (subscription_event("e1", T, kind="deleted", sub_id="sub_old", status="canceled"),
         subscription_event("e2", T + 5, kind="created", sub_id="sub_new"), Outcome.applied),
        # a final invoice of a canceled subscription does not revive it
        (subscription_event("e1", T, kind="deleted", status="canceled"),
         invoice_event("e2", T + 5), Outcome.ignored),
    ],
)
def test_events_about_other_subscriptions(first: dict[str, Any], second: dict[str, Any],
                                          outcome: Outcome) -> None:
    _, outcomes = run([first, second])
    assert outcomes == [Outcome.applied, outcome]


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        (envelope("e", "customer.created", T, {"id": "cus_1"}), Outcome.unknown_type),
        (envelope("e", "checkout.session.completed", T, {"mode": "payment"}), Outcome.ignored),
        (envelope("e", "invoice.paid", T, {"customer": "cus_1"}), Outcome.ignored),
        (envelope("e", "customer.subscription.updated", T, {"id": "sub_1", "status": "weird"}),
         Outcome.ignored),
    ],
)
def test_odd_events_change_nothing(raw: dict[str, Any], outcome: Outcome) -> None:
    transition = apply_event(START, parse_event(raw), CATALOG)
    assert (transition.outcome, transition.state) == (outcome, START)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "invoice.paid", "created": 1, "data": {"object": {}}}', "no id"),
        (b'{"id": "evt", "created": 1, "data": {"object": {}}}', "no type"),
        (b'{"id": "evt", "type": "x", "created": "1", "data": {"object": {}}}', "no created"),
        (b'{"id": "evt", "type": "x", "created": 1, "data": {}}', "no data.object"),
    ],
)
def test_malformed_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        parse_event(decode_payload(payload))


def test_user_hint() -> None:
    assert user_hint(parse_event(checkout_event("e", T, user_id=42))) == 42
    assert user_hint(parse_event(subscription_event("e", T, user_id=9))) == 9
    assert user_hint(parse_event(subscription_event("e", T))) is None


@pytest.mark.parametrize(("header", "now", "ok"), [
    ("t=1000,v1=ab", 1000.0, True),
    ("t=1000,v1=ab", 1300.0, True),  # exactly the tolerance, both ways
    ("t=1000,v1=ab", 700.0, True),
    ("t=1000,v1=ab", 1300.5, False),  # too old
    ("t=1000,v1=ab", 699.0, False),  # signed in the future
    ("t=87400,v1=ab", 1000.0, False),  # a day ahead
    ("v1=ab,t=1000", 1000.0, True),
    ("t=1000,t=99999,v1=ab", 1000.0, True),  # the first t is the one Stripe verifies
    ("t=99999,t=1000,v1=ab", 1000.0, False),
    ("v1=ab", 1000.0, False),
    (None, 1000.0, False),
    ("t=,v1=ab", 1000.0, False),
    ("t=-5,v1=ab", 0.0, False),
    ("t=\u00b2,v1=ab", 2.0, False),
    ("t=" + "9" * 5000 + ",v1=ab", 1000.0, False),
])
def test_signature_time_tolerance_holds_both_ways(header: str | None, now: float,
                                                   ok: bool) -> None:
    if ok:
        check_signature_time(header, now)
    else:
        with pytest.raises(InvalidWebhook):
            check_signature_time(header, now)
