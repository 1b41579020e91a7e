"""The WebSocket protocol: welcome, rooms, presence, and every kind of bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from common.settings import Settings
from tests.server_helpers import LiveServer, WsClient, auth, live_server


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    turn = {"turn_urls": ["turn:127.0.0.1:3478?transport=udp"], "turn_secret": "t" * 24}
    async with live_server(settings.model_copy(update=turn)) as s:
        yield s


async def test_welcome_carries_user_and_turn_credentials(server: LiveServer) -> None:
    token, user = await server.register("alice")
    client = await server.connect(token)
    welcome = client.welcome
    assert welcome["user"]["id"] == user["id"] and welcome["protocol"] == 1
    (turn,) = welcome["ice_servers"]
    expiry, who = turn["username"].split(":")
    assert who == str(user["id"]) and int(expiry) > server.app_state.clock()
    assert turn["credential"] and turn["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    await client.close()


@pytest.mark.parametrize("token", ["", "garbage", "expired", "wrong-secret"])
async def test_bad_tokens_close_with_4401(server: LiveServer, token: str) -> None:
    now = server.app_state.clock()
    if token == "expired":
        token, _ = server.app_state.signer.issue("1", "user", "a", now - 7200, 60)
    elif token == "wrong-secret":
        from signaling.auth import TokenSigner

        token, _ = TokenSigner("another-secret-0123456789abcdef", "disco", "disco").issue(
            "1", "user", "a", now, 60
        )
    ws = await websockets.connect(f"{server.ws_url}?token={token}")
    error = json.loads(await ws.recv())
    assert error["type"] == "error" and error["code"] == "unauthorized"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_join_presence_and_leave(server: LiveServer) -> None:
    a_token, a_user = await server.register("alice")
    b_token, b_user = await server.register("bob")
    group = await server.group_with(a_token, b_token)
    a, b = await server.connect(a_token), await server.connect(b_token)
    room = f"group:{group}"
    joined_a = await a.request({"type": "join", "room": room, "id": "j1"}, "joined")
    assert joined_a["id"] == "j1" and joined_a["participants"] == []
    joined_b = await b.request({"type": "join", "room": room}, "joined")
    assert [p["user_id"] for p in joined_b["participants"]] == [a_user["id"]]
    arrival = await a.expect("participant_joined")
    assert arrival["user_id"] == b_user["id"]
    assert arrival["participant_id"] == joined_b["participant_id"]

    await b.request({"type": "leave", "room": room}, "left")
    gone = await a.expect("participant_left")
    assert gone["participant_id"] == joined_b["participant_id"]

    await b.request({"type": "join", "room": room}, "joined")
    await a.expect("participant_joined")
    await b.close()  # no goodbye: the socket just closes
    await a.expect("participant_left")
    await a.close()


async def test_protocol_errors_leave_the_connection_usable(server: LiveServer) -> None:
    token, _ = await server.register("alice")
    other, _ = await server.register("mallory")
    group = await server.group_with(other)
    client = await server.connect(token)

    cases: list[tuple[str | bytes, str]] = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        (json.dumps({"type": "teleport"}), "unknown_type"),
        (json.dumps({"no": "type"}), "unknown_type"),
        (json.dumps({"type": "join", "room": "x" * 5000}), "bad_request"),
        (json.dumps({"type": "join", "room": "pool:1"}), "bad_request"),
        (json.dumps({"type": "join", "room": f"group:{group}"}), "not_found"),
        (json.dumps({"type": "join", "room": "group:999999"}), "not_found"),
        (json.dumps({"type": "leave", "room": "group:1"}), "not_found"),
        (json.dumps({"type": "join", "room": "nearby", "radius_m": 50}), "bad_request"),
        (json.dumps({"type": "join", "room": "nearby", "radius_m": 2500}), "bad_request"),
        (json.dumps({"type": "candidate", "room": "group:1", "candidate": None}), "not_found"),
        (json.dumps({"type": "volume", "participant_id": "p_x", "gain": 3}), "bad_request"),
        (json.dumps({"type": "mute", "muted": True}), "bad_request"),
        (json.dumps({"type": "ping", "extra": 1}), "bad_request"),
        (json.dumps({"type": "ping", "pad": "x" * 70_000}), "message_too_large"),
        (b"\x00\x01binary", "bad_frame"),
    ]
    for n, (frame, code) in enumerate(cases):
        await client.ws.send(frame)
        error = await client.expect("error")
        assert error["code"] == code, (n, error)
        assert error["message"]
    # Still connected, and ids are echoed.
    pong = await client.request({"type": "ping", "id": 77}, "pong")
    assert pong["id"] == 77
    await client.close()


def _nested(depth: int) -> str:
    return '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"


HOSTILE_FRAMES: list[tuple[str, str]] = [
    # each of these reached a traceback and an ``internal`` error (issue 12, finding 5)
    ('{"type": [1, 2]}', "unknown_type"),
    ('{"type": {"a": 1}}', "unknown_type"),
    ('{"type": ' + "[" * 900 + "]" * 900 + "}", "unknown_type"),
    (_nested(5_000), "bad_json"),
    (_nested(500), "bad_request"),
    ('{"type": "join", "room": "group:' + "9" * 19 + '"}', "not_found"),
    ('{"type": "join", "room": "group:' + "9" * 40 + '"}', "not_found"),
    ('{"type": "join", "room": "group:2147483648"}', "not_found"),
    ('{"type": "join", "room": "group:\u00b2"}', "bad_request"),
    ('{"type": "join", "room": "group:\u0661"}', "bad_request"),
    ('{"type": "ping", "id": ' + "9" * 4_400 + "}", "bad_json"),
    ('{"type": "ping", "id": ' + "9" * 4_000 + "}", "bad_request"),
    ('{"type": "location", "lat": ' + "9" * 400 + ', "lon": 0, "accuracy_m": 5}', "bad_request"),
]


async def test_hostile_frames_get_clear_errors_and_no_traceback(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    token, _ = await server.register("alice")
    client = await server.connect(token)
    for n, (frame, code) in enumerate(HOSTILE_FRAMES):
        await client.ws.send(frame)
        error = await client.expect("error")
        assert error["code"] == code, (n, error)
        assert len(error["message"]) < 200 and "id" not in error
    pong = await client.request({"type": "ping", "id": 78}, "pong")
    assert pong["id"] == 78
    await client.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_a_client_cannot_grow_the_log_without_bound(
    server: LiveServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever slips through to a traceback is logged a few times per connection, not per
    message."""
    from signaling.ws import session as ws_session

    async def broken(_session: object, _msg: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(ws_session.SESSION_HANDLERS, "ping", broken)
    monkeypatch.setattr(ws_session, "_PROCESS_LOG_BUDGET", ws_session.LogBudget(20, 60.0))
    token, _ = await server.register("alice")
    for _ in range(3):  # reconnecting gets no more than the process's budget
        client = await server.connect(token)
        for n in range(200):
            await client.send({"type": "ping", "id": n})
        for n in range(200):
            error = await client.expect("error", id=n)
            assert error["code"] == "internal"
        await client.close()
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 3 * ws_session.CONNECTION_LOG_BURST


async def test_join_twice_and_guest_rules(server: LiveServer) -> None:
    token, _ = await server.register("alice")
    group = await server.group_with(token)
    client = await server.connect(token)
    await client.request({"type": "join", "room": f"group:{group}"}, "joined")
    await client.send({"type": "join", "room": f"group:{group}", "id": 2})
    error = await client.expect("error")
    assert error["id"] == 2 and "already in room" in error["message"]

    guest_token = (await server.http.post("/api/auth/guest",
                                          json={"display_name": "G"})).json()["access_token"]
    guest = await server.connect(guest_token)
    assert guest.welcome["user"]["kind"] == "guest"
    await guest.send({"type": "join", "room": f"group:{group}"})
    assert (await guest.expect("error"))["code"] == "forbidden"
    await client.close()
    await guest.close()


async def owner_and_member(server: LiveServer) -> tuple[str, dict[str, Any], int, WsClient,
                                                        WsClient]:
    """A group of two, both connected: the owner's token, the member, the group, sockets."""
    owner, _ = await server.register("owner")
    member, member_user = await server.register("member")
    group = await server.group_with(owner, member)
    return owner, member_user, group, await server.connect(owner), await server.connect(member)


async def test_removed_member_is_taken_out_of_the_room(server: LiveServer) -> None:
    owner, member_user, group, a, b = await owner_and_member(server)
    await a.request({"type": "join", "room": f"group:{group}"}, "joined")
    await b.request({"type": "join", "room": f"group:{group}"}, "joined")
    await a.expect("participant_joined")
    r = await server.http.delete(f"/api/groups/{group}/members/{member_user['id']}",
                                 headers=auth(owner))
    assert r.status_code == 204
    left = await b.expect("left")
    assert left["reason"] == "membership"
    await a.expect("participant_left")
    await a.close()
    await b.close()


async def test_a_role_change_keeps_the_member_in_the_group(server: LiveServer) -> None:
    owner, member_user, group, a, b = await owner_and_member(server)
    await b.request({"type": "join", "room": f"group:{group}"}, "joined")
    r = await server.http.put(f"/api/groups/{group}/members/{member_user['id']}/role",
                              headers=auth(owner), json={"role": "admin"})
    assert r.status_code == 200
    changed = await b.expect("membership")
    assert changed["change"] == "role" and changed["user_id"] == member_user["id"]
    # Still in the room and still hearing the group's events.
    await a.request({"type": "location", "lat": 46.0, "lon": 7.0, "accuracy_m": 5},
                    "location_ok")
    assert (await b.expect("member_location"))["group_id"] == group
    assert not [m for m in b.backlog if m["type"] == "left"]
    await a.close()
    await b.close()


async def test_same_user_reconnecting_replaces_the_stale_participant(server: LiveServer) -> None:
    token, _ = await server.register("alice")
    other, _ = await server.register("bob")
    group = await server.group_with(token, other)
    watcher = await server.connect(other)
    await watcher.request({"type": "join", "room": f"group:{group}"}, "joined")
    old = await server.connect(token)
    first = await old.request({"type": "join", "room": f"group:{group}"}, "joined")
    new = await server.connect(token)
    second = await new.request({"type": "join", "room": f"group:{group}"}, "joined")
    assert (await old.expect("left"))["reason"] == "replaced"
    gone = await watcher.expect("participant_left")
    assert gone["participant_id"] == first["participant_id"] != second["participant_id"]
    for c in (watcher, old, new):
        await c.close()
