"""Tokens do not outlive their account (issue #12, finding 4), on SQLite and PostgreSQL.

A deleted account's token gets 401 on REST and close 4401 on the WebSocket;
its id is never handed to the next user who registers; a password change
bumps the account's generation, so every token issued before it stops working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import websockets
from sqlalchemy import text

from common.settings import Settings
from signaling.edge_errors import WS_CLOSE_UNAUTHORIZED
from tests.server_helpers import PASSWORD, LiveServer, auth, live_server

NEW_PASSWORD = "a different battery staple"


@pytest.fixture
async def server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings.model_copy(update={"database_url": database_url})) as s:
        yield s


async def _delete_user_row(server: LiveServer, user_id: int) -> None:
    """Delete the account behind the server's back, as the hostile tester did."""
    async with server.app_state.engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})


async def _ws_close_code(server: LiveServer, token: str) -> int | None:
    async with websockets.connect(f"{server.ws_url}?token={token}") as ws:
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


async def test_deleted_accounts_token_is_refused_and_its_id_never_reused(
    server: LiveServer,
) -> None:
    await server.register("first")
    token, user = await server.register("doomed")
    await _delete_user_row(server, int(user["id"]))

    me = await server.http.get("/api/auth/me", headers=auth(token))
    assert me.status_code == 401, me.text
    created = await server.http.post("/api/groups", json={"name": "x"}, headers=auth(token))
    assert created.status_code == 401, created.text
    assert await _ws_close_code(server, token) == WS_CLOSE_UNAUTHORIZED

    _next_token, next_user = await server.register("newcomer")
    assert next_user["id"] > user["id"], "a deleted account's id was handed out again"
    me = await server.http.get("/api/auth/me", headers=auth(token))
    assert me.status_code == 401, me.text


async def test_password_change_revokes_older_tokens(server: LiveServer) -> None:
    old_token, _ = await server.register("alice")
    ws = await server.connect(old_token)
    changed = await server.http.post(
        "/api/auth/password", headers=auth(old_token),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    new_token = changed.json()["access_token"]

    assert (await server.http.get("/api/auth/me", headers=auth(old_token))).status_code == 401
    assert (await server.http.get("/api/auth/me", headers=auth(new_token))).status_code == 200
    # the live WebSocket opened with the old token is closed, and cannot reconnect
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(20):
            await ws.recv(timeout_s=5.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == WS_CLOSE_UNAUTHORIZED
    assert await _ws_close_code(server, old_token) == WS_CLOSE_UNAUTHORIZED

    old_login = await server.http.post("/api/auth/login",
                                       json={"username": "alice", "password": PASSWORD})
    assert old_login.status_code == 401
    login = await server.http.post("/api/auth/login",
                                   json={"username": "alice", "password": NEW_PASSWORD})
    assert login.status_code == 200, login.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"current_password": "wrong password!", "new_password": NEW_PASSWORD}, 401),
        ({"current_password": PASSWORD, "new_password": "short"}, 400),
        ({"current_password": PASSWORD}, 400),
    ],
)
async def test_password_change_refuses_bad_input(server: LiveServer, body: dict[str, str],
                                                 status: int) -> None:
    token, _ = await server.register("bob")
    r = await server.http.post("/api/auth/password", headers=auth(token), json=body)
    assert r.status_code == status, r.text
    assert (await server.http.get("/api/auth/me", headers=auth(token))).status_code == 200
