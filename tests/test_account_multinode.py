"""Accounts across two nodes (one PostgreSQL, one Redis): login limits are shared,
and a password change or deletion on node A ends the account's tokens and
WebSockets on node B at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import websockets

from common.settings import Settings
from signaling.edge_errors import WS_CLOSE_UNAUTHORIZED
from tests.server_helpers import PASSWORD, LiveServer, WsClient, auth, live_server


@pytest.fixture
async def nodes(settings: Settings, postgres_url: str,
                redis_url: str, redis_prefix: str
                ) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    shared = {"database_url": postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix,
              "login_account_burst": 4, "login_account_per_min": 1.0}
    async with live_server(settings.model_copy(update={**shared, "node_id": "a"})) as a, \
            live_server(settings.model_copy(update={**shared, "node_id": "b"})) as b:
        yield a, b


async def _closed_with(ws: WsClient) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(50):
            await ws.recv(timeout_s=5.0)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_login_limit_is_shared_by_the_nodes(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    await a.register("alice")  # attempt 1 (on A)
    statuses = []
    for node in (b, a, b, a):  # attempts 2-5, alternating nodes
        r = await node.http.post("/api/auth/login",
                                 json={"username": "alice", "password": "wrong password!"})
        statuses.append(r.status_code)
    assert statuses == [401, 401, 401, 429]
    r = await b.http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and 30 <= int(r.headers["retry-after"]) <= 60


async def test_revocation_on_a_reaches_node_b(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    token, _ = await a.register("bob")
    on_b = await b.connect(token)
    changed = await a.http.post("/api/auth/password", headers=auth(token), json={
        "current_password": PASSWORD, "new_password": "another battery staple"})
    assert changed.status_code == 200, changed.text
    assert await _closed_with(on_b) == WS_CLOSE_UNAUTHORIZED
    assert (await b.http.get("/api/auth/me", headers=auth(token))).status_code == 401

    fresh = changed.json()["access_token"]
    on_b = await b.connect(fresh)
    gone = await a.http.request("DELETE", "/api/auth/me", headers=auth(fresh),
                                json={"password": "another battery staple"})
    assert gone.status_code == 204, gone.text
    assert await _closed_with(on_b) == WS_CLOSE_UNAUTHORIZED
    assert (await b.http.get("/api/auth/me", headers=auth(fresh))).status_code == 401
