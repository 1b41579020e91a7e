"""Billing and push over HTTP on a real server (uvicorn, SQLite and PostgreSQL), with
a local stand-in for Stripe's API, plus the ``disco admin`` commands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from billing.plans import ENTITLEMENTS_TOPIC
from common.settings import Settings
from signaling.cli import build_parser
from tests.billing_support import (
    FakeStripe,
    billing_settings,
    body,
    envelope,
    sign,
    subscription_event,
)
from tests.push_support import android_token, ios_token
from tests.server_helpers import LiveServer, auth, live_server


@pytest.fixture
def server(billing_server: LiveServer) -> LiveServer:
    return billing_server


async def post_webhook(server: LiveServer, event: dict[str, Any],
                       signature: str | None = None) -> Any:
    payload = body(event)
    return await server.http.post(
        "/api/billing/webhook", content=payload,
        headers={"Stripe-Signature": signature or sign(payload),
                 "Content-Type": "application/json"},
    )


async def plan_of(server: LiveServer, token: str) -> str:
    r = await server.http.get("/api/billing/subscription", headers=auth(token))
    assert r.status_code == 200, r.text
    return str(r.json()["plan"])


async def test_sixth_member_refused_until_an_upgrade_arrives(server: LiveServer) -> None:
    owner, owner_user = await server.register("owner")
    members = [(await server.register(f"member{i}"))[0] for i in range(5)]
    group_id = await server.group_with(owner, *members[:4])  # owner + 4 = the free limit
    invite = await server.http.post(f"/api/groups/{group_id}/invites", headers=auth(owner))
    code = invite.json()["code"]
    refused = await server.http.post(f"/api/invites/{code}/accept", headers=auth(members[4]))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "limit_exceeded"
    assert refused.json()["detail"]["limit"] == "max_group_members"
    assert "5 members" in refused.json()["message"]

    # the owner pays: checkout, then Stripe tells us about the subscription
    checkout = await server.http.post("/api/billing/checkout", json={"plan": "plus"},
                                      headers=auth(owner))
    assert checkout.status_code == 200, checkout.text
    listener = server.app_state.bus.subscription()
    await listener.add(ENTITLEMENTS_TOPIC)
    event = subscription_event("evt_up", int(time.time()), kind="created",
                               customer="cus_test1", status="active")
    r = await post_webhook(server, event)
    assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text
    got = await asyncio.wait_for(listener.get(), 5)
    await listener.close()
    assert got is not None
    topic, message = got
    assert topic == ENTITLEMENTS_TOPIC
    assert (message["user_id"], message["group_ids"], message["plan"], message["music"]) \
        == (owner_user["id"], [group_id], "plus", True)
    assert await plan_of(server, owner) == "plus"
    joined = await server.http.post(f"/api/invites/{code}/accept", headers=auth(members[4]))
    assert joined.status_code == 200, joined.text


async def test_webhook_route_rejects_bad_input_with_nothing_changed(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    await server.http.post("/api/billing/checkout", json={"plan": "plus"}, headers=auth(owner))
    event = subscription_event("evt_1", int(time.time()), customer="cus_test1")
    payload = body(event)
    cases = [
        sign(payload, secret="whsec_wrong"),  # forged
        sign(payload, timestamp=int(time.time()) - 301),  # stale
        "",  # missing
    ]
    for signature in cases:
        r = await server.http.post("/api/billing/webhook", content=payload,
                                   headers={"Stripe-Signature": signature})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request"
    not_json = b"<xml>not json</xml>"
    r = await server.http.post("/api/billing/webhook", content=not_json,
                               headers={"Stripe-Signature": sign(not_json)})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    assert await plan_of(server, owner) == "free"
    # unknown types are acknowledged (so Stripe stops retrying) and ignored
    r = await post_webhook(server, envelope("evt_x", "payout.paid", int(time.time()), {}))
    assert r.status_code == 200 and r.json()["outcome"] == "unknown_type"
    # a valid event, then its replay
    assert (await post_webhook(server, event)).json()["outcome"] == "applied"
    assert (await post_webhook(server, event)).json()["outcome"] == "duplicate"
    assert await plan_of(server, owner) == "plus"


async def test_checkout_portal_and_subscription_routes(server: LiveServer,
                                                       stripe_api: FakeStripe) -> None:
    token, _ = await server.register("payer")
    r = await server.http.post("/api/billing/checkout", json={"plan": "gold"},
                               headers=auth(token))
    assert r.status_code == 400 and "unknown plan 'gold'" in r.json()["message"]
    r = await server.http.post("/api/billing/portal", headers=auth(token))
    assert r.status_code == 404 and "subscribe" in r.json()["message"]
    assert stripe_api.requests == []
    r = await server.http.post("/api/billing/checkout", json={"plan": "plus"},
                               headers=auth(token))
    assert r.status_code == 200 and r.json()["url"].startswith("https://checkout.stripe.test/")
    assert stripe_api.requests[-1].form["success_url"].startswith("https://disco.example/app/")
    r = await server.http.post("/api/billing/portal", headers=auth(token))
    assert r.status_code == 200 and r.json()["url"].startswith("https://billing.stripe.test/")
    await post_webhook(server, subscription_event("evt_1", int(time.time()),
                                                  customer="cus_test1"))
    r = await server.http.post("/api/billing/checkout", json={"plan": "plus"},
                               headers=auth(token))
    assert r.status_code == 409 and "already have the plus plan" in r.json()["message"]
    sub = (await server.http.get("/api/billing/subscription", headers=auth(token))).json()
    assert sub["plan"] == "plus" and sub["subscription"]["status"] == "active"
    assert sub["entitlements"]["max_group_members"] == 25
    plans = (await server.http.get("/api/billing/plans")).json()
    assert [p["name"] for p in plans["plans"]] == ["free", "plus", "pro"]
    assert (await server.http.post("/api/billing/checkout", json={"plan": "plus"})
            ).status_code == 401


async def test_device_and_push_settings_routes(server: LiveServer) -> None:
    token, _ = await server.register("phone")
    h = auth(token)
    ok = await server.http.post("/api/devices", json={"platform": "ios",
                                                      "token": ios_token(1).upper()}, headers=h)
    assert ok.status_code == 201 and ok.json() == {"platform": "ios", "token": ios_token(1)}
    for bad in ({"platform": "ios", "token": "abc"}, {"platform": "android", "token": "x y"},
                {"platform": "pager", "token": ios_token(2)}, {"platform": "ios"}):
        r = await server.http.post("/api/devices", json=bad, headers=h)
        assert r.status_code == 400, (bad, r.text)
    await server.http.post("/api/devices", json={"platform": "android",
                                                 "token": android_token(1)}, headers=h)
    listed = (await server.http.get("/api/devices", headers=h)).json()["devices"]
    assert [d["token"] for d in listed] == [ios_token(1), android_token(1)]
    assert (await server.http.delete(f"/api/devices/{ios_token(1)}", headers=h)
            ).status_code == 204
    assert (await server.http.delete(f"/api/devices/{ios_token(1)}", headers=h)
            ).status_code == 404
    r = await server.http.put("/api/push/settings", json={"muted": ["call", "place"]}, headers=h)
    assert r.status_code == 200 and r.json()["muted"] == ["call", "place"]
    r = await server.http.put("/api/push/settings", json={"muted": ["spam"]}, headers=h)
    assert r.status_code == 400 and "unknown push category" in r.json()["message"]
    assert (await server.http.get("/api/push/settings", headers=h)).json()["muted"] \
        == ["call", "place"]


def test_admin_commands(settings: Settings, tmp_path: Path, sqlite_url: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    configured = billing_settings(settings, tmp_path, sqlite_url, "http://127.0.0.1:9")

    async def setup_and_webhook() -> None:
        async with live_server(configured) as server:
            token, _ = await server.register("support")
            r = await post_webhook(server, envelope("evt_x", "payout.paid", 1, {}))
            assert r.status_code == 200
            assert token

    asyncio.run(setup_and_webhook())
    from signaling.admin_cli import run_admin

    def admin(*argv: str) -> tuple[int, str, str]:
        code = run_admin(build_parser().parse_args(["admin", *argv]), configured)
        out, err = capsys.readouterr()
        return code, out, err

    assert admin("subscriptions") == (0, "no subscriptions yet\n", "")
    code, out, _ = admin("grant", "support", "plus", "--days", "30")
    assert code == 0 and "now on plus" in out
    code, out, _ = admin("subscriptions")
    assert code == 0 and "support" in out and "plus" in out and "admin" in out
    code, out, _ = admin("webhooks")
    assert code == 0 and "evt_x" in out and "unknown_type" in out
    code, _, err = admin("grant", "support", "gold")
    assert code == 1 and "unknown plan 'gold'" in err
    code, _, err = admin("grant", "nobody", "plus")
    assert code == 1 and "no user 'nobody'" in err
