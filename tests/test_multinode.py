"""Two nodes sharing one PostgreSQL and one Redis, as a scaled-out deployment runs.

Accounts made on one node log in on the other; a position posted to node A
reaches a member connected to node B; a removal on node A takes the member
out of the group room they are in on node B.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from groups.location.fixes import FIX_BURST
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


async def test_a_members_fix_budget_is_one_across_nodes(
    nodes: tuple[LiveServer, LiveServer]
) -> None:
    """Sending fixes to two nodes does not double the budget (one Redis bucket)."""
    a, b = nodes
    token, _ = await a.register("rider")
    frozen = a.app_state.clock()
    for node in nodes:  # no refill mid-test, however slow the machine
        node.app_state.clock = lambda: frozen
    codes = []
    for n in range(2 * FIX_BURST):
        r = await (a if n % 2 else b).http.post("/api/locations", headers=auth(token), json={
            "lat": 46.0, "lon": 7.0, "accuracy_m": 10, "ts": frozen - 1})
        codes.append(r.status_code)
    assert codes.count(200) == FIX_BURST
    assert codes.count(429) == FIX_BURST
