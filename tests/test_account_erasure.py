"""Accounts people can leave: DELETE /api/auth/me and GET /api/auth/me/export,
on SQLite and PostgreSQL, with Stripe played by a local stand-in.

Alice owns "crew" (Carol joined before Bob, but Bob is an admin: Bob takes
over), owns "solo" alone (deleted with her), and is a member of Dave's
"dave". She has a location history, a place, an SOS event, a push device and
a paid subscription. Deleting her cancels the subscription at Stripe first,
removes all of it, closes her WebSocket with 4401, tells Dave's group she
left, and her token gets 401 from then on.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import websockets
from sqlalchemy import text

from signaling.edge_errors import WS_CLOSE_UNAUTHORIZED
from tests.billing_support import FakeStripe, body, sign, subscription_event
from tests.server_helpers import PASSWORD, LiveServer, auth

FCM_TOKEN = "fcm-token-for-alice-phone-0123456789abcdef"
USER_TABLES = ("location_points", "last_locations", "location_sharing", "place_states",
               "group_events", "push_devices", "push_settings", "subscriptions", "memberships")


@pytest.fixture
def server(billing_server: LiveServer) -> LiveServer:
    return billing_server


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def _alice_with_everything(server: LiveServer) -> dict[str, Any]:
    alice, alice_user = await server.register("alice")
    carol, _ = await server.register("carol")
    bob, bob_user = await server.register("bob")
    dave, _ = await server.register("dave")
    crew = await server.group_with(alice, carol, bob, name="crew")
    await _ok(await server.http.put(f"/api/groups/{crew}/members/{bob_user['id']}/role",
                                    json={"role": "admin"}, headers=auth(alice)))
    solo = await server.group_with(alice, name="solo")
    daves = await server.group_with(dave, alice, name="dave")
    now = time.time()
    for i in range(3):
        await _ok(await server.http.post("/api/locations", headers=auth(alice), json={
            "lat": 46.0 + i / 1000, "lon": 7.0, "accuracy_m": 10, "ts": now - 30 + i}))
    place = await _ok(await server.http.post(
        f"/api/groups/{crew}/places", headers=auth(alice),
        json={"name": "alice home", "lat": 46.2, "lon": 7.1, "radius_m": 100}), 201)
    await _ok(await server.http.post("/api/sos", headers=auth(alice)))
    await _ok(await server.http.post("/api/devices", headers=auth(alice),
                                     json={"platform": "android", "token": FCM_TOKEN}), 201)
    await _ok(await server.http.post("/api/billing/checkout", json={"plan": "plus"},
                                     headers=auth(alice)))
    return {"alice": alice, "alice_id": int(alice_user["id"]), "bob": bob,
            "bob_id": int(bob_user["id"]), "dave": dave, "crew": crew, "solo": solo,
            "daves": daves, "place_id": place["id"]}


async def _pay(server: LiveServer, stripe_api: FakeStripe) -> None:
    customer = next(r.form for r in stripe_api.requests if r.path == "/v1/customers")
    assert customer["metadata[user_id]"]
    customer_id = "cus_test1"
    payload = body(subscription_event("evt_paid", int(time.time()) - 5, kind="created",
                                      customer=customer_id, sub_id="sub_alice"))
    r = await server.http.post("/api/billing/webhook", content=payload,
                               headers={"Stripe-Signature": sign(payload)})
    assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text


async def _rows_of(server: LiveServer, user_id: int) -> dict[str, int]:
    counts = {}
    async with server.app_state.engine.connect() as conn:
        for table in USER_TABLES:
            counts[table] = (await conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE user_id = :u"), {"u": user_id}
            )).scalar_one()
        counts["places"] = (await conn.execute(
            text("SELECT count(*) FROM places WHERE created_by = :u"), {"u": user_id}
        )).scalar_one()
        counts["users"] = (await conn.execute(
            text("SELECT count(*) FROM users WHERE id = :u"), {"u": user_id})).scalar_one()
    return counts


async def test_export_then_delete_everything(server: LiveServer, stripe_api: FakeStripe) -> None:
    a = await _alice_with_everything(server)
    await _pay(server, stripe_api)

    export = await _ok(await server.http.get("/api/auth/me/export", headers=auth(a["alice"])))
    assert export["profile"]["username"] == "alice"
    assert {(g["name"], g["role"]) for g in export["groups"]} == {
        ("crew", "owner"), ("solo", "owner"), ("dave", "member")}
    history = export["location"]["history"]
    assert history["type"] == "FeatureCollection" and len(history["features"]) == 3
    assert history["features"][0]["geometry"] == {"type": "Point", "coordinates": [7.0, 46.0]}
    assert export["location"]["last"]["geometry"]["coordinates"] == [7.0, 46.002]
    assert [p["name"] for p in export["places"]] == ["alice home"]
    assert {e["kind"] for e in export["events"]} == {"sos"}
    assert export["push"]["devices"][0]["token_tail"] == FCM_TOKEN[-6:]
    assert export["subscription"]["plan"] == "plus"
    assert export["subscription"]["stripe_subscription_id"] == "sub_alice"
    assert (await server.http.get("/api/auth/me/export")).status_code == 401

    live = await server.connect(a["alice"])
    dave_ws = await server.connect(a["dave"])
    before = await _rows_of(server, a["alice_id"])
    assert all(before[t] > 0 for t in ("location_points", "group_events", "push_devices",
                                       "subscriptions", "memberships", "places"))

    wrong = await server.http.request("DELETE", "/api/auth/me", headers=auth(a["alice"]),
                                      json={"password": "not her password"})
    assert wrong.status_code == 401
    missing = await server.http.request("DELETE", "/api/auth/me", headers=auth(a["alice"]))
    assert missing.status_code == 400
    assert await _rows_of(server, a["alice_id"]) == before
    assert not any(r.method == "DELETE" for r in stripe_api.requests)

    r = await server.http.request("DELETE", "/api/auth/me", headers=auth(a["alice"]),
                                  json={"password": PASSWORD})
    assert r.status_code == 204, r.text
    cancels = [r.path for r in stripe_api.requests if r.method == "DELETE"]
    assert cancels == ["/v1/subscriptions/sub_alice"]

    after = await _rows_of(server, a["alice_id"])
    assert after == dict.fromkeys(after, 0), after
    # her token is dead everywhere, and her WebSocket was closed
    assert (await server.http.get("/api/auth/me", headers=auth(a["alice"]))).status_code == 401
    assert (await server.http.get("/api/auth/me/export",
                                  headers=auth(a["alice"]))).status_code == 401
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(50):
            await live.recv(timeout_s=5.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == WS_CLOSE_UNAUTHORIZED
    login = await server.http.post("/api/auth/login",
                                   json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 401
    left = await dave_ws.expect("membership", user_id=a["alice_id"])
    assert left["change"] == "left" and left["group_id"] == a["daves"]
    await dave_ws.close()

    # crew passed to Bob (the admin), not Carol (longer in the group, a member)
    crew = await _ok(await server.http.get(f"/api/groups/{a['crew']}", headers=auth(a["bob"])))
    assert crew["owner_id"] == a["bob_id"] and crew["role"] == "owner"
    assert {m["username"] for m in crew["members"]} == {"bob", "carol"}
    places = await _ok(await server.http.get(f"/api/groups/{a['crew']}/places",
                                             headers=auth(a["bob"])))
    assert places["places"] == []
    daves = await _ok(await server.http.get(f"/api/groups/{a['daves']}",
                                            headers=auth(a["dave"])))
    assert [m["username"] for m in daves["members"]] == ["dave"]
    async with server.app_state.engine.connect() as conn:
        solo = (await conn.execute(text("SELECT count(*) FROM groups WHERE id = :g"),
                                   {"g": a["solo"]})).scalar_one()
    assert solo == 0, "her group with no one else in it was not deleted"
    # the username is free again; the id is not
    _, again = await server.register("alice")
    assert again["id"] > a["alice_id"]


async def test_a_failing_stripe_deletes_nothing(server: LiveServer,
                                                stripe_api: FakeStripe) -> None:
    a = await _alice_with_everything(server)
    await _pay(server, stripe_api)
    before = await _rows_of(server, a["alice_id"])
    stripe_api.fail_next = 5
    r = await server.http.request("DELETE", "/api/auth/me", headers=auth(a["alice"]),
                                  json={"password": PASSWORD})
    assert r.status_code == 503, r.text
    assert "cancel the subscription" in r.json()["message"]
    assert await _rows_of(server, a["alice_id"]) == before
    assert (await server.http.get("/api/auth/me", headers=auth(a["alice"]))).status_code == 200
