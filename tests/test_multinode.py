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
from groups.location.fixes import FIX_BURST
from groups.push.fcm import FcmSender
from groups.push.messages import Platform
from signaling.rooms import Room
from tests.push_support import FakeFcm, android_token, fake_fcm
from tests.server_helpers import PASSWORD, LiveServer, WsClient, auth, live_server


@pytest.fixture
async def nodes(settings: Settings, postgres_url: str,
                redis_url: str, redis_prefix: str
                ) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    shared = {"database_url": postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with live_server(settings.model_copy(
                update={**shared, "node_id": "a", "node_url": "http://a.test:8080"})) as a, \
            live_server(settings.model_copy(
                update={**shared, "node_id": "b", "node_url": "http://b.test:8080"})) as b:
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


async def room_messages_run_on_the_host(hosted: Room, relayed: WsClient, other: WsClient,
                                        room: str) -> None:
    """mute, volume, chat, a rename and a second join from ``relayed`` (a member whose
    socket is on another node) run on the room's node: ``other`` sees each event once."""
    me = next(p for p in hosted.participants.values() if p.peer.display_name == "bob")
    them = next(p for p in hosted.participants.values() if p is not me)
    muted = await relayed.request({"type": "mute", "room": room, "muted": True}, "muted")
    assert muted["muted"] is True and me.muted
    assert (await other.expect("participant_muted"))["participant_id"] == me.participant_id
    vol = await relayed.request(
        {"type": "volume", "participant_id": them.participant_id, "gain": 0.5}, "volume")
    assert vol["gain"] == 0.5
    sent = await relayed.request({"type": "chat", "room": room, "text": "relayed"},
                                 "chat_sent")
    assert sent["recipients"] == 1
    assert (await other.expect("chat"))["text"] == "relayed"
    with pytest.raises(TimeoutError):  # once, no echo to the sender
        await relayed.expect("chat", timeout_s=0.3)
    renamed = await relayed.request({"type": "display_name", "display_name": "Robert"},
                                    "display_name")
    assert renamed["changes_left"] == 2
    got = await other.expect("participant_renamed", participant_id=me.participant_id)
    assert got["display_name"] == "Robert" and got["room"] == room
    await relayed.send({"type": "join", "room": room, "id": "twice"})
    assert (await relayed.expect("error", id="twice"))["code"] == "bad_request"


async def test_a_join_on_another_node_is_relayed(nodes: tuple[LiveServer, LiveServer]) -> None:
    """One call on one node, whichever node each member's socket reached."""
    a, b = nodes
    ann, _ = await a.register("ann")
    bob, _ = await a.register("bob")
    group = await a.group_with(ann, bob)
    room = f"group:{group}"
    ann_a, bob_b = await a.connect(ann), await b.connect(bob)
    await ann_a.request({"type": "join", "room": room}, "joined")
    joined = await bob_b.request({"type": "join", "room": room}, "joined")
    assert [p["display_name"] for p in joined["participants"]] == ["ann"]
    bob_pid = joined["participant_id"]
    ann_pid = joined["participants"][0]["participant_id"]
    assert (await ann_a.expect("participant_joined"))["participant_id"] == bob_pid
    assert b.app_state.rooms.get(room) is None  # no second, silent call on b
    hosted = a.app_state.rooms.get(room)
    assert hosted is not None and set(hosted.participants) == {bob_pid, ann_pid}

    # Room messages from b run on a, and a's events come back.
    await room_messages_run_on_the_host(hosted, bob_b, ann_a, room)
    await ann_a.request({"type": "chat", "room": room, "text": "to b"}, "chat_sent")
    assert (await bob_b.expect("chat"))["text"] == "to b"

    # A request sent right behind a leave, before the link closed, still gets its answer.
    await bob_b.send({"type": "leave", "room": room, "id": "bye"})
    await bob_b.send({"type": "mute", "room": room, "muted": False, "id": "late"})
    await bob_b.expect("left", id="bye")
    assert (await bob_b.expect("error", id="late"))["code"] == "not_found"
    await bob_b.request({"type": "join", "room": room}, "joined")  # back, relayed again
    bob_pid = (await ann_a.expect("participant_joined"))["participant_id"]

    # The same user again from node a: one participant remains, the old one is told.
    bob_a = await a.connect(bob)
    again = await bob_a.request({"type": "join", "room": room}, "joined")
    replaced = await bob_b.expect("left", room=room)
    assert replaced["reason"] == "replaced"
    assert [p["display_name"] for p in again["participants"]] == ["ann"]
    assert len(hosted.participants) == 2
    ann_view = await ann_a.expect("participant_joined", participant_id=again["participant_id"])
    assert ann_view["display_name"] == "bob"  # a new connection, its own name

    # bob's socket on b joins again (relayed again), replacing the one on a.
    await bob_b.request({"type": "join", "room": room}, "joined")
    assert (await bob_a.expect("left", room=room))["reason"] == "replaced"
    await bob_b.request({"type": "leave", "room": room}, "left")

    # Removed from the group while relayed: out of the call on the hosting node too.
    bob_pid = (await bob_b.request({"type": "join", "room": room}, "joined"))["participant_id"]
    assert bob_pid in hosted.participants
    bob_id = (await b.http.get("/api/auth/me", headers=auth(bob))).json()["id"]
    r = await b.http.delete(f"/api/groups/{group}/members/{bob_id}", headers=auth(ann))
    assert r.status_code == 204, r.text
    assert (await bob_b.expect("left", room=room))["reason"] == "membership"
    await ann_a.expect("participant_left", participant_id=bob_pid)
    assert bob_pid not in hosted.participants
    for ws in (ann_a, bob_a, bob_b):
        await ws.close()
    await asyncio.sleep(0.5)
    assert a.app_state.rooms.get(room) is None and not a.app_state.relay.remote
    assert not b.app_state.relay.links


async def test_a_relayed_room_whose_node_goes_gets_a_clear_answer(
    nodes: tuple[LiveServer, LiveServer], settings: Settings
) -> None:
    """The hosting node stops: a relayed message gets an error or the client is told
    to rejoin, never silence; the next join places the room on a live node."""
    a, b = nodes
    ann, _ = await a.register("ann")
    bob, _ = await a.register("bob")
    group = await a.group_with(ann, bob)
    room = f"group:{group}"
    shared = {k: getattr(a.app_state.settings, k)
              for k in ("database_url", "redis_url", "redis_prefix")}
    async with live_server(settings.model_copy(update={**shared, "node_id": "c"})) as c:
        ann_c = await c.connect(ann)
        await ann_c.request({"type": "join", "room": room}, "joined")
        bob_b = await b.connect(bob)
        await bob_b.request({"type": "join", "room": room}, "joined")  # relayed to c
        await ann_c.close()
    # c has stopped: nothing listens on its relay topic, its heartbeat is gone.
    await bob_b.send({"type": "mute", "room": room, "muted": True, "id": "m"})
    answer = await bob_b.expect_any({"error", "left"}, timeout_s=3)
    if answer["type"] == "error":
        assert answer["code"] == "moved" and answer["id"] == "m"
    else:
        assert answer["reason"] == "host_lost"
    joined = await bob_b.request({"type": "join", "room": room}, "joined")
    assert joined["participants"] == []
    assert b.app_state.rooms.get(room) is not None  # placed again, on a live node: b
    await bob_b.close()


async def test_group_chat_reaches_the_room_once_on_a_cluster(
    nodes: tuple[LiveServer, LiveServer]
) -> None:
    """Chat goes over Redis; each member, local or relayed, gets it once."""
    a, b = nodes
    ann, _ = await a.register("ann")
    bob, _ = await a.register("bob")
    cat, _ = await a.register("cat")
    group = await a.group_with(ann, bob, cat)
    room = f"group:{group}"
    on_a, bob_a, cat_b = await a.connect(ann), await a.connect(bob), await b.connect(cat)
    for ws in (on_a, bob_a, cat_b):
        await ws.request({"type": "join", "room": room}, "joined")

    await on_a.request({"type": "chat", "room": room, "text": "one"}, "chat_sent")
    sent = await cat_b.request({"type": "chat", "room": room, "text": "two"}, "chat_sent")
    assert sent["recipients"] == 2
    for ws, texts in ((on_a, ["two"]), (bob_a, ["one", "two"]), (cat_b, ["one"])):
        got = [(await ws.expect("chat", room=room))["text"] for _ in texts]
        assert sorted(got) == texts
    await asyncio.sleep(0.3)
    for ws in (on_a, bob_a, cat_b):
        with pytest.raises(TimeoutError):
            await ws.expect("chat", timeout_s=0.2)
        await ws.close()


async def a_member_away_with_a_phone(node: LiveServer) -> tuple[str, str, int]:
    """ann's group with bob and "away", whose Android phone (``android_token(7)``) gets
    pushes: (ann's token, bob's token, the group's id)."""
    ann, _ = await node.register("ann")
    bob, _ = await node.register("bob")
    away, _ = await node.register("away")
    group = await node.group_with(ann, bob, away, name="Rope team")
    r = await node.http.post("/api/devices", headers=auth(away),
                             json={"platform": "android", "token": android_token(7)})
    assert r.status_code == 201, r.text
    return ann, bob, group


def calls_started(fake: FakeFcm) -> int:
    """How many "call started" pushes reached the phone of ``a_member_away_with_a_phone``."""
    return len([m for m in fake.sent_to(android_token(7))
                if m["notification"]["body"].startswith("A call started")])


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
        ann, bob, group = await a_member_away_with_a_phone(a)
        on_a, on_b = await a.connect(ann), await b.connect(bob)
        room = f"group:{group}"
        await asyncio.gather(on_a.send({"type": "join", "room": room, "id": "j"}),
                             on_b.send({"type": "join", "room": room, "id": "j"}))
        for ws in (on_a, on_b):
            await ws.expect_any({"joined", "error"}, id="j")
        for node in (a, b):
            await asyncio.gather(*node.app_state.background)
            await node.app_state.push.drain()
        assert calls_started(fake) == 1
        await on_a.close()
        await on_b.close()
