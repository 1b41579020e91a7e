"""A media node (``disco media``): group calls hosted on a node without HTTP or a database.

In process: a whole node (``live_server``) and a media node share PostgreSQL
and Redis. Members connect to the whole node; their group room is placed on
the media node, which runs the room's messages relayed to it (mute, volume,
chat, rename, leave), the call-started push is still sent (by the whole node),
and a relayed join without the whole node's grant is refused. The media
node imports none of the web and database stack. With real processes and
real audio: ``tests/test_media_workers.py``. And the web client in Chromium,
unchanged, in a call hosted by a media node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from billing import admin
from billing.plans import ENTITLEMENTS_TOPIC
from common.db import session_scope
from common.settings import Settings
from groups.push.fcm import FcmSender
from groups.push.messages import Platform
from signaling.media_node import MediaState, build_media_state, close_media_state
from signaling.routes.billing import recheck_rooms
from signaling.ws.relay import topic
from tests.browser_helpers import Browser, launch_chromium
from tests.push_support import android_token, fake_fcm
from tests.rtc_helpers import RtcClient, eventually, loopback_ice
from tests.server_helpers import LiveServer, live_server
from tests.services import require_binary
from tests.test_multinode import (
    a_member_away_with_a_phone,
    calls_started,
    room_messages_run_on_the_host,
)
from tests.test_web_client import (
    HEARD_PEAK_MIN,
    INBOUND_ENERGY_JS,
    LOOPBACK,
    MEDIA_TIMEOUT_S,
    loudest_heard,
)


@contextlib.asynccontextmanager
async def web_and_media(settings: Settings, **shared: object
                        ) -> AsyncIterator[tuple[LiveServer, MediaState]]:
    """A whole node "web" and a media node "m1", both on ``settings`` with ``shared``."""
    media = await build_media_state(settings.model_copy(update={**shared, "node_id": "m1"}))
    try:
        async with live_server(settings.model_copy(update={**shared, "node_id": "web"})) as web:
            yield web, media
    finally:
        await close_media_state(media)


async def pair_in_a_group(web: LiveServer, owner: str, member: str
                          ) -> tuple[str, str, dict[str, Any], str]:
    """Two new users in one group: (owner's token, member's token, owner's user, the
    group's room id)."""
    owner_token, owner_user = await web.register(owner)
    member_token, _ = await web.register(member)
    group = await web.group_with(owner_token, member_token)
    return owner_token, member_token, owner_user, f"group:{group}"


@pytest.fixture
async def deployment(settings: Settings, postgres_url: str, redis_url: str, redis_prefix: str
                     ) -> AsyncIterator[tuple[LiveServer, MediaState]]:
    async with web_and_media(settings, database_url=postgres_url, redis_url=redis_url,
                             redis_prefix=redis_prefix) as nodes:
        yield nodes


async def test_a_group_call_is_hosted_by_the_media_node(
    deployment: tuple[LiveServer, MediaState]
) -> None:
    web, media = deployment
    ann, bob, _, room = await pair_in_a_group(web, "ann", "bob")
    ann_ws, bob_ws = await web.connect(ann), await web.connect(bob)
    first = await ann_ws.request({"type": "join", "room": room}, "joined")
    assert first["participants"] == [] and first["music_allowed"] is False  # the default plan
    joined = await bob_ws.request({"type": "join", "room": room}, "joined")
    assert [p["display_name"] for p in joined["participants"]] == ["ann"]
    ann_pid, bob_pid = first["participant_id"], joined["participant_id"]
    assert web.app_state.rooms.get(room) is None  # not on the whole node
    hosted = media.rooms.get(room)
    assert hosted is not None and set(hosted.participants) == {ann_pid, bob_pid}

    await room_messages_run_on_the_host(hosted, bob_ws, ann_ws, room)

    # Bad input relayed to the media node gets the same clear errors as on a whole node.
    await bob_ws.send({"type": "candidate", "room": room, "candidate": None, "id": "c"})
    assert (await bob_ws.expect("error", id="c"))["code"] == "bad_request"
    await bob_ws.send({"type": "volume", "participant_id": "p_nobody", "gain": 0.5, "id": "v"})
    assert (await bob_ws.expect("error", id="v"))["code"] == "not_found"

    await bob_ws.request({"type": "leave", "room": room}, "left")
    await ann_ws.expect("participant_left", participant_id=bob_pid)
    for ws in (ann_ws, bob_ws):
        await ws.close()
    await asyncio.sleep(0.5)
    assert media.rooms.get(room) is None and not media.relay.remote


async def test_plan_changes_reach_a_room_on_a_media_node(
    deployment: tuple[LiveServer, MediaState]
) -> None:
    """Music: the join's grant, a plan-change notice, and the whole node's re-check."""
    web, media = deployment
    state = web.app_state
    ann, bob, ann_user, room = await pair_in_a_group(web, "ann", "bob")
    ann_ws = await web.connect(ann)
    await ann_ws.request({"type": "join", "room": room}, "joined")
    hosted = media.rooms.get(room)
    assert hosted is not None and hosted.music_allowed is False

    async with session_scope(state.sessions) as db:  # `disco admin grant ann plus`
        await admin.grant_plan(db, "ann", "plus", state.plans, state.clock())
    bob_ws = await web.connect(bob)
    joined = await bob_ws.request({"type": "join", "room": room}, "joined")
    assert joined["music_allowed"] is True and hosted.music_allowed is True  # the grant

    await state.bus.publish(ENTITLEMENTS_TOPIC, {"user_id": ann_user["id"],
                                                 "group_ids": [int(room.removeprefix("group:"))],
                                                 "music": False})
    await eventually(lambda: hosted.music_allowed is False, 5, "the notice to apply")
    assert await recheck_rooms(state) == 0  # nothing hosted on the whole node itself...
    await eventually(lambda: hosted.music_allowed is True, 5, "the re-check to reach it")
    for ws in (ann_ws, bob_ws):
        await ws.close()


async def test_a_join_the_whole_node_did_not_check_is_refused(
    deployment: tuple[LiveServer, MediaState]
) -> None:
    """Only a relayed join with its grant enters a room on a media node."""
    web, media = deployment
    replies = web.app_state.bus.subscription()
    await replies.add(topic("forger"))
    for room in ("group:1", "nearby"):
        await web.app_state.bus.publish(topic("m1"), {
            "op": "msg", "link": f"l_{room}", "origin": "forger",
            "identity": {"subject": "1", "kind": "user", "display_name": "x",
                         "expires_at": 2**40},
            "message": {"type": "join", "room": room, "id": "j"}})
        _topic, envelope = await asyncio.wait_for(anext(aiter(replies)), 5)
        assert envelope["op"] == "out" and envelope["message"]["code"] == "forbidden"
    await replies.close()
    assert media.rooms.rooms() == []


async def test_a_call_started_on_a_media_node_pushes_once(
    deployment: tuple[LiveServer, MediaState], tmp_path: Path
) -> None:
    web, media = deployment
    with fake_fcm(tmp_path) as (fake, account):
        web.app_state.push.senders[Platform.android] = FcmSender(
            service_account_file=str(account), endpoint_base=fake.url)
        ann, bob, group = await a_member_away_with_a_phone(web)
        room = f"group:{group}"
        ann_ws, bob_ws = await web.connect(ann), await web.connect(bob)
        await ann_ws.request({"type": "join", "room": room}, "joined")
        await bob_ws.request({"type": "join", "room": room}, "joined")
        assert media.rooms.get(room) is not None
        for _ in range(50):  # the media node's call_started reaches the whole node
            if web.app_state.background or fake.sent_to(android_token(7)):
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(*web.app_state.background)
        await web.app_state.push.drain()
        assert calls_started(fake) == 1
        for ws in (ann_ws, bob_ws):
            await ws.close()


HEAVY = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "sqlmodel", "alembic", "asyncpg",
         "aiosqlite", "numba", "stripe", "groups.accounts", "signaling.deps")

CHILD = """
import asyncio, json, sys
from common.settings import load_settings
from signaling.cli import build_parser
from signaling.media_node import build_media_state, close_media_state

async def main():
    build_parser()  # as `disco media` does
    settings = load_settings(None, redis_url=sys.argv[1], redis_prefix=sys.argv[2])
    state = await build_media_state(settings)
    loaded = [m for m in json.loads(sys.argv[3]) if m in sys.modules]
    await close_media_state(state)
    print(json.dumps(loaded))

asyncio.run(main())
"""


def test_a_media_node_loads_no_web_or_database_code(redis_url: str, redis_prefix: str,
                                                     tmp_path: Path) -> None:
    """What keeps its idle RSS low (``python -m bench.cluster --rss`` measures it)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, redis_prefix, json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.fixture
async def loopback_deployment(settings: Settings, postgres_url: str, redis_url: str,
                              redis_prefix: str, monkeypatch: pytest.MonkeyPatch
                              ) -> AsyncIterator[tuple[LiveServer, MediaState]]:
    """``deployment`` with media on 127.0.0.1 only, as the browser tests run it."""
    loopback_ice(monkeypatch)
    async with web_and_media(settings, database_url=postgres_url, redis_url=redis_url,
                             redis_prefix=redis_prefix, rtc_host_addresses=[LOOPBACK]) as nodes:
        yield nodes


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Browser]:
    async with launch_chromium(require_binary("chromium", "chromium"), tmp_path) as browser:
        yield browser


async def test_a_browser_talks_through_a_media_node(
    loopback_deployment: tuple[LiveServer, MediaState], chromium: Browser
) -> None:
    """The web client as a user runs it, unchanged: its call is hosted by the media node."""
    web, media = loopback_deployment
    alice, bob, _, room = await pair_in_a_group(web, "alice", "bob")
    bob_ws = await web.connect(bob)
    await bob_ws.request({"type": "join", "room": room}, "joined")
    tone = RtcClient("bob", tone_hz=440)
    try:
        answer = await bob_ws.request({"type": "offer", "room": room, "sdp": await tone.offer()},
                                      "answer")
        await tone.accept(answer["sdp"])
        page = await chromium.new_page()
        await page.goto(f"{web.base_url}/app/")
        await page.evaluate(f"localStorage.setItem('disco.token', {json.dumps(alice)})")
        await page.goto(f"{web.base_url}/app/")
        await page.wait_for("document.querySelector('#groups .talk')")
        await page.click("#groups .talk")
        await bob_ws.expect("participant_joined", timeout_s=10)
        hosted = media.rooms.get(room)
        assert hosted is not None and len(hosted.participants) == 2  # both on the media node
        assert web.app_state.rooms.get(room) is None
        await page.wait_for("window.disco.pc?.connectionState === 'connected'", MEDIA_TIMEOUT_S)
        await page.wait_for(f"({INBOUND_ENERGY_JS}).then((e) => e > 0.001)", MEDIA_TIMEOUT_S)
        peak = await loudest_heard(tone.recorder, MEDIA_TIMEOUT_S)
        assert peak >= HEARD_PEAK_MIN, f"Bob never heard the browser's microphone (peak {peak})"
    finally:
        await tone.close()
        await bob_ws.close()
