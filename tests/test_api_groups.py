"""REST: accounts, groups, roles and invites through a live server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from tests.server_helpers import PASSWORD, LiveServer, auth, live_server


@pytest.fixture
async def server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings.model_copy(update={"database_url": database_url})) as s:
        yield s


async def test_health_and_openapi(server: LiveServer) -> None:
    health = (await server.http.get("/healthz")).json()
    assert health["status"] == "ok" and health["version"]
    spec = (await server.http.get("/openapi.json")).json()
    assert "/api/auth/register" in spec["paths"] and "/api/groups" in spec["paths"]


async def test_register_login_me(server: LiveServer) -> None:
    _token, user = await server.register("alice")
    assert user["username"] == "alice"
    login = await server.http.post("/api/auth/login", json={"username": "ALICE",
                                                            "password": PASSWORD})
    assert login.status_code == 200 and login.json()["access_token"]
    me = await server.http.get("/api/auth/me", headers=auth(login.json()["access_token"]))
    assert me.json()["id"] == user["id"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"username": "bob", "password": ""}, 400, "at least 8"),
        ({"username": "bob", "password": "short"}, 400, "at least 8"),
        ({"username": "bob", "password": "password"}, 400, "too easy"),
        ({"username": "bob", "password": "aaaaaaaaaaaa"}, 400, "too easy"),
        ({"username": "b", "password": PASSWORD}, 400, "username must be"),
        ({"username": "bob'; DROP TABLE users;--", "password": PASSWORD}, 400, "username must be"),
        ({"username": "bob"}, 400, "password"),
        ({"username": "alice", "password": PASSWORD}, 409, "taken"),
    ],
)
async def test_bad_registrations(server: LiveServer, body: dict[str, str], status: int,
                                 error: str) -> None:
    await server.register("alice")
    r = await server.http.post("/api/auth/register", json=body)
    assert r.status_code == status and error in r.json()["message"], r.text
    login = await server.http.post("/api/auth/login",
                                   json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200


async def test_malformed_and_oversized_bodies(server: LiveServer) -> None:
    r = await server.http.post("/api/auth/register", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    big = b'{"username": "' + b"a" * 70_000 + b'"}'
    r = await server.http.post("/api/auth/register", content=big,
                               headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "message_too_large"


async def test_wrong_login_and_bad_tokens(server: LiveServer) -> None:
    await server.register("alice")
    r = await server.http.post("/api/auth/login",
                               json={"username": "alice", "password": "nope-nope"})
    assert r.status_code == 401
    r = await server.http.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["message"] == "wrong username or password"
    for headers in ({}, auth("garbage"), {"Authorization": "Basic eA=="}):
        r = await server.http.get("/api/groups", headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_group_lifecycle_with_roles_and_invites(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    member, member_user = await server.register("member")
    outsider, outsider_user = await server.register("outsider")
    r = await server.http.post("/api/groups", json={"name": "Robert'); DROP TABLE groups;--"},
                               headers=auth(owner))
    assert r.status_code == 201 and r.json()["role"] == "owner"
    group = r.json()
    assert group["name"] == "Robert'); DROP TABLE groups;--"  # stored as text, nothing dropped

    # Non-members see nothing: 404, not 403.
    r = await server.http.get(f"/api/groups/{group['id']}", headers=auth(outsider))
    assert r.status_code == 404 and "members" not in r.json()
    # Only owner/admin may invite.
    invite = await server.http.post(f"/api/groups/{group['id']}/invites", headers=auth(owner))
    assert invite.status_code == 201
    code = invite.json()["code"]
    accepted = await server.http.post(f"/api/invites/{code}/accept", headers=auth(member))
    assert accepted.status_code == 200
    # Reused invite, unknown invite.
    r = await server.http.post(f"/api/invites/{code}/accept", headers=auth(outsider))
    assert r.status_code == 409 and "already used" in r.json()["message"]
    r = await server.http.post("/api/invites/nope/accept", headers=auth(outsider))
    assert r.status_code == 404
    r = await server.http.post(f"/api/groups/{group['id']}/invites", headers=auth(member))
    assert r.status_code == 403

    detail = (await server.http.get(f"/api/groups/{group['id']}", headers=auth(member))).json()
    assert {(m["username"], m["role"]) for m in detail["members"]} == {
        ("owner", "owner"), ("member", "member")
    }
    # Promote, then the admin may invite; an admin cannot remove the owner.
    r = await server.http.put(f"/api/groups/{group['id']}/members/{member_user['id']}/role",
                              json={"role": "admin"}, headers=auth(owner))
    assert r.status_code == 200
    assert (await server.http.post(f"/api/groups/{group['id']}/invites",
                                   headers=auth(member))).status_code == 201
    r = await server.http.delete(f"/api/groups/{group['id']}/members/{group['owner_id']}",
                                 headers=auth(member))
    assert r.status_code == 403
    # The owner cannot leave; a member can.
    r = await server.http.post(f"/api/groups/{group['id']}/leave", headers=auth(owner))
    assert r.status_code == 409
    assert (await server.http.post(f"/api/groups/{group['id']}/leave",
                                   headers=auth(member))).status_code == 204
    assert (await server.http.get("/api/groups", headers=auth(member))).json()["groups"] == []
    # Delete: only the owner, and then it is gone for everyone.
    assert (await server.http.delete(f"/api/groups/{group['id']}",
                                     headers=auth(outsider))).status_code == 404
    assert (await server.http.delete(f"/api/groups/{group['id']}",
                                     headers=auth(owner))).status_code == 204
    assert (await server.http.get(f"/api/groups/{group['id']}",
                                  headers=auth(owner))).status_code == 404
    assert outsider_user["id"] != member_user["id"]


async def test_expired_invite(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    joiner, _ = await server.register("joiner")
    group_id = (await server.http.post("/api/groups", json={"name": "g"},
                                       headers=auth(owner))).json()["id"]
    code = (await server.http.post(f"/api/groups/{group_id}/invites",
                                   headers=auth(owner))).json()["code"]
    real_clock = server.app_state.clock
    server.app_state.clock = lambda: real_clock() + server.app_state.settings.invite_ttl_s + 1
    try:
        # A fresh token, valid at the shifted time.
        token, _ = server.app_state.signer.issue(
            "2", "user", "joiner", server.app_state.clock(), 3600
        )
        r = await server.http.post(f"/api/invites/{code}/accept", headers=auth(token))
        assert r.status_code == 409 and "expired" in r.json()["message"]
    finally:
        server.app_state.clock = real_clock
    assert joiner


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\tname\x00"])
async def test_bad_group_names(server: LiveServer, name: str) -> None:
    owner, _ = await server.register("owner")
    r = await server.http.post("/api/groups", json={"name": name}, headers=auth(owner))
    assert r.status_code == 400 and "group name" in r.json()["message"]
    assert (await server.http.get("/api/groups", headers=auth(owner))).json()["groups"] == []


async def test_guest_token_cannot_use_group_routes(server: LiveServer) -> None:
    r = await server.http.post("/api/auth/guest", json={"display_name": "Wanderer"})
    assert r.status_code == 201
    guest = r.json()["access_token"]
    r = await server.http.post("/api/groups", json={"name": "g"}, headers=auth(guest))
    assert r.status_code == 403 and "guest" in r.json()["message"]


@pytest.mark.parametrize("path", [
    "/api/groups/9999999999999999999999999",
    "/api/groups/9223372036854775808",
    "/api/groups/9223372036854775807",
    "/api/groups/2147483648",
    "/api/groups/%C2%B2",
    "/api/groups/0",
    "/api/groups/-1",
    "/api/groups/abc",
    "/api/groups/9999999999999999999999999/locations",
    "/api/groups/9999999999999999999999999/places",
    "/api/groups/9999999999999999999999999/events",
    "/api/groups/1/members/9999999999999999999999999/history?from=0&to=1",
])
async def test_ids_that_name_nothing_are_404_not_500(
    server: LiveServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    token, _ = await server.register("alice")
    r = await server.http.get(path, headers=auth(token))
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_largest_id_is_an_ordinary_404(server: LiveServer) -> None:
    token, _ = await server.register("alice")
    for method, path in (("GET", "/api/groups/2147483647"),
                         ("DELETE", "/api/groups/1/places/2147483647"),
                         ("DELETE", "/api/groups/1/members/2147483647")):
        r = await server.http.request(method, path, headers=auth(token))
        assert r.status_code == 404, (path, r.text)
