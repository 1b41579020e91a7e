"""Two nodes sharing one PostgreSQL and one Redis, as a scaled-out deployment runs.

Accounts made on one node log in on the other; a position posted to node A
reaches a member connected to node B; a removal on node A takes the member
out of the group room they are in on node B.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.settings import Settings
from groups.push.fcm import FcmSender
from groups.push.messages import Platform
from tests.push_support import android_token, fake_fcm
from tests.server_helpers import PASSWORD, LiveServer, auth, live_server


@pytest.fixture
async def nodes(settings: Settings, postgres_url: str,
                redis_url: str, redis_prefix: str
                ) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    shared = {"database_url": postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with live_server(settings.model_copy(update={**shared, "node_id": "a"})) as a, \
            live_server(settings.model_copy(update={**shared, "node_id": "b"})) as b:
        yield a, b


async def test_events_cross_nodes(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    assert (await a.http.get("/healthz")).json()["node"] == "a"
    assert (await b.http.get("/healthz")).json()["node"] == "b"
    owner, _ = await a.register("owner")
    await a.register("member")
    login = await b.http.post("/api/auth/login", json={"username": "member", "password": PASSWORD})
    assert login.status_code == 200  # the account made on A works on B
    member = login.json()["access_token"]
    member_id = login.json()["user"]["id"]
    group = await a.group_with(owner, member)

    on_b = await b.connect(member)
    await on_b.request({"type": "join", "room": f"group:{group}"}, "joined")
    r = await a.http.post("/api/locations", headers=auth(owner),
                          json={"lat": 59.3293, "lon": 18.0686, "accuracy_m": 12})
    assert r.status_code == 200, r.text
    seen = await on_b.expect("member_location", timeout_s=5)
    assert seen["group_id"] == group and seen["location"]["lat"] == pytest.approx(59.3293)

    # The owner removes the member on node A; node B takes them out of the room.
    r = await a.http.delete(f"/api/groups/{group}/members/{member_id}", headers=auth(owner))
    assert r.status_code == 204
    left = await on_b.expect("left", timeout_s=5)
    assert left["reason"] == "membership"
    await on_b.close()


async def test_group_chat_crosses_nodes_once(nodes: tuple[LiveServer, LiveServer]) -> None:
    """Members of one room on two nodes: chat reaches the other node, and no one twice."""
    a, b = nodes
    ann, _ = await a.register("ann")
    bob, _ = await a.register("bob")
    cat, _ = await a.register("cat")
    group = await a.group_with(ann, bob, cat)
    room = f"group:{group}"
    on_a, bob_a, cat_b = await a.connect(ann), await a.connect(bob), await b.connect(cat)
    for ws in (on_a, bob_a, cat_b):
        await ws.request({"type": "join", "room": room}, "joined")

    await on_a.request({"type": "chat", "room": room, "text": "from node a"}, "chat_sent")
    await cat_b.request({"type": "chat", "room": room, "text": "from node b"}, "chat_sent")
    for ws, texts in ((on_a, ["from node b"]), (bob_a, ["from node a", "from node b"]),
                      (cat_b, ["from node a"])):
        got = [(await ws.expect("chat", room=room))["text"] for _ in texts]
        assert sorted(got) == texts
    await asyncio.sleep(0.3)
    for ws in (on_a, bob_a, cat_b):
        assert not [m for m in ws.backlog if m["type"] == "chat"]
        with pytest.raises(TimeoutError):
            await ws.expect("chat", timeout_s=0.2)
        await ws.close()


async def test_call_started_pushes_once_across_nodes(
    nodes: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    """The room starting on both nodes at once still pushes the absent member once."""
    a, b = nodes
    with fake_fcm(tmp_path) as (fake, account):
        for node in (a, b):
            node.app_state.push.senders[Platform.android] = FcmSender(
                service_account_file=str(account), endpoint_base=fake.url
            )
        ann, _ = await a.register("ann")
        bob, _ = await a.register("bob")
        away, _ = await a.register("away")
        group = await a.group_with(ann, bob, away, name="Rope team")
        r = await a.http.post("/api/devices", headers=auth(away),
                              json={"platform": "android", "token": android_token(7)})
        assert r.status_code == 201, r.text
        on_a, on_b = await a.connect(ann), await b.connect(bob)
        room = f"group:{group}"
        await asyncio.gather(on_a.send({"type": "join", "room": room, "id": "j"}),
                             on_b.send({"type": "join", "room": room, "id": "j"}))
        for ws in (on_a, on_b):
            await ws.expect_any({"joined", "error"}, id="j")
        for node in (a, b):
            await asyncio.gather(*node.app_state.background)
            await node.app_state.push.drain()
        calls = [m for m in fake.sent_to(android_token(7))
                 if m["notification"]["body"].startswith("A call started")]
        assert len(calls) == 1, calls
        await on_a.close()
        await on_b.close()
