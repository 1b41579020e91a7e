"""A plan change reaches live rooms within seconds, both ways, without a rejoin
(issue #12, finding 8).

``disco admin grant`` runs as a separate process against the server's
database, as an operator runs it. Without Redis, the server's periodic
re-check of its live group rooms picks the change up; with Redis, the admin
command also publishes on the bus and the change lands at once (well before
the next re-check).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from tests.rtc_helpers import write_tone_file
from tests.server_helpers import LiveServer, WsClient, live_server
from tests.services import DISCO

WITHIN_S = 5.0


def admin_grant(settings: Settings, user: str, plan: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env["DISCO_DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["DISCO_REDIS_URL"] = settings.redis_url
        env["DISCO_REDIS_PREFIX"] = settings.redis_prefix
    done = subprocess.run([DISCO, "admin", "grant", user, plan], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"now on {plan}" in done.stdout, done.stdout


@pytest.fixture
def music_settings(settings: Settings, tmp_path: Path) -> Settings:
    music = tmp_path / "music"
    music.mkdir()
    write_tone_file(music / "tone.wav", freq_hz=330.0, seconds=5.0, rate_hz=24_000)
    return settings.model_copy(update={"music_dir": music, "entitlements_recheck_s": 1.0})


async def play(ws: WsClient, room: str) -> dict[str, Any]:
    """Ask to play; the music_state or error reply."""
    ws.requests += 1
    request_id = f"play-{ws.requests}"
    await ws.send({"type": "music", "action": "play", "source": "tone.wav", "room": room,
                   "id": request_id})
    return await ws.expect_any({"music_state", "error"}, 10.0, id=request_id)


async def until_music(ws: WsClient, room: str, allowed: bool, since: float) -> float:
    """Seconds from ``since`` until playing is allowed (or refused) in the live room."""
    while True:
        reply = await play(ws, room)
        if (reply["type"] == "music_state") == allowed:
            if not allowed:
                assert reply["code"] == "limit_exceeded", reply
            return time.monotonic() - since
        assert time.monotonic() - since < WITHIN_S, (
            f"music still {'refused' if allowed else 'allowed'} {WITHIN_S}s after the grant")
        await asyncio.sleep(0.2)


async def _owner_in_room(server: LiveServer) -> tuple[WsClient, str]:
    token, _ = await server.register("alice")
    group = await server.group_with(token)
    room = f"group:{group}"
    ws = await server.connect(token)
    joined = await ws.request({"type": "join", "room": room}, "joined")
    assert joined["music_allowed"] is False
    assert (await play(ws, room))["code"] == "limit_exceeded"
    return ws, room


@pytest.fixture
async def server(music_settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(music_settings) as s:
        yield s


async def test_grant_and_revoke_reach_a_live_room_without_redis(server: LiveServer) -> None:
    settings = server.app_state.settings
    assert settings.redis_url is None
    ws, room = await _owner_in_room(server)
    try:
        admin_grant(settings, "alice", "plus")
        took = await until_music(ws, room, allowed=True, since=time.monotonic())
        live = server.app_state.rooms.get(room) if server.app_state.rooms else None
        assert live is not None and live.music_allowed
        admin_grant(settings, "alice", "free")
        took_back = await until_music(ws, room, allowed=False, since=time.monotonic())
        assert not live.music_allowed
        print(f"grant live after {took:.2f} s, revoke after {took_back:.2f} s (re-check 1 s)")
    finally:
        await ws.close()


async def test_admin_grant_publishes_on_the_bus(music_settings: Settings,
                                                redis_url: str, redis_prefix: str) -> None:
    configured = music_settings.model_copy(update={"redis_url": redis_url,
                                                   "redis_prefix": redis_prefix,
                                                   "entitlements_recheck_s": 600.0})
    async with live_server(configured) as server:
        ws, room = await _owner_in_room(server)
        try:
            admin_grant(configured, "alice", "plus")
            assert await until_music(ws, room, allowed=True, since=time.monotonic()) < 2.0
            admin_grant(configured, "alice", "free")
            assert await until_music(ws, room, allowed=False, since=time.monotonic()) < 2.0
        finally:
            await ws.close()
