"""Music from uploads and the music folder, through REST and the WebSocket.

An uploaded tone file is played into a live group room and heard by a real
aiortc peer; bad uploads and sources that try to leave the folders get clear
errors and leave the room as it was.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.rtc_helpers import RtcClient, eventually, has_tone, loopback_ice, write_tone_file
from tests.server_helpers import LiveServer, auth, live_server

MUSIC_HZ = 330.0


async def grant_music(server: LiveServer, username: str) -> None:
    """Put the group owner on the plan with music, as `disco admin grant` does."""
    from billing.admin import grant_plan

    async with server.app_state.sessions() as db:
        await grant_plan(db, username, "plus", server.app_state.plans, server.app_state.clock())
        await db.commit()


@pytest.fixture
async def server(settings: Settings, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    loopback_ice(monkeypatch)
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    write_tone_file(music_dir / "tone.ogg", MUSIC_HZ, seconds=3.0)
    (tmp_path / "secret.wav").write_bytes(b"RIFF not for you")
    os.symlink(tmp_path / "secret.wav", music_dir / "escape.wav")
    configured = settings.model_copy(update={
        "rtc_host_addresses": ["127.0.0.1"], "music_dir": music_dir,
        "upload_dir": tmp_path / "uploads", "max_upload_bytes": 2_000_000,
    })
    async with live_server(configured) as s:
        yield s


async def test_upload_then_play_into_a_live_room(server: LiveServer, tmp_path: Path) -> None:
    token, _ = await server.register("deejay")
    listener_token, _ = await server.register("listener")
    group = await server.group_with(token, listener_token)
    await grant_music(server, "deejay")
    library = await server.http.get("/api/music", headers=auth(token))
    assert library.json()["files"] == ["tone.ogg"]  # the symlink out of the folder is hidden
    song = tmp_path / "upload.wav"
    write_tone_file(song, MUSIC_HZ, seconds=4.0)
    r = await server.http.post("/api/music/uploads?filename=upload.wav",
                               content=song.read_bytes(), headers=auth(token))
    assert r.status_code == 201, r.text
    source = r.json()["id"]

    room = f"group:{group}"
    dj = await server.connect(token)
    ws = await server.connect(listener_token)
    await dj.request({"type": "join", "room": room}, "joined")
    await ws.request({"type": "join", "room": room}, "joined")
    peer = RtcClient("listener", None)  # listens only: sends silence
    try:
        answer = await ws.request({"type": "offer", "room": room, "sdp": await peer.offer()},
                                  "answer")
        await peer.accept(answer["sdp"])
        await peer.wait_connected()
        await peer.recorder.wait_frames(25)
        state = await dj.request({"type": "music", "action": "play", "source": source},
                                 "music_state")
        assert state["room"] == room
        await ws.expect("music_state")  # the room hears of it too
        await eventually(lambda: has_tone(peer.recorder.last(0.5), MUSIC_HZ), 8.0,
                         "the uploaded music in the listener's mix")
        # A folder file queues behind it.
        queued = await dj.request({"type": "music", "action": "queue", "source": "tone.ogg"},
                                  "music_state")
        assert len(queued["queue"]) >= 1
        await dj.request({"type": "music", "action": "stop"}, "music_state")
    finally:
        await peer.close()
        await dj.close()
        await ws.close()


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("../secret.wav", "bad_request"),
        ("/etc/passwd", "bad_request"),
        ("escape.wav", "bad_request"),
        ("nothing-here.ogg", "not_found"),
        ("up-000000000000000000000000", "not_found"),
    ],
)
async def test_music_sources_that_escape_or_do_not_exist(server: LiveServer, source: str,
                                                         code: str) -> None:
    token, _ = await server.register("deejay")
    group = await server.group_with(token)
    await grant_music(server, "deejay")
    ws = await server.connect(token)
    await ws.request({"type": "join", "room": f"group:{group}"}, "joined")
    await ws.send({"type": "music", "action": "play", "source": source})
    error = await ws.expect("error")
    assert error["code"] == code, error
    # The room is unaffected: nothing playing, still answering.
    await ws.request({"type": "ping"}, "pong")
    await ws.close()


async def test_bad_uploads(server: LiveServer) -> None:
    token, _ = await server.register("deejay")
    r = await server.http.post("/api/music/uploads?filename=x.mp3", content=b"not audio at all",
                               headers=auth(token))
    assert r.status_code == 400 and "not an audio file" in r.json()["message"]
    r = await server.http.post("/api/music/uploads", content=b"", headers=auth(token))
    assert r.status_code == 400
    r = await server.http.post("/api/music/uploads", content=b"\0" * 2_000_001,
                               headers=auth(token))
    assert r.status_code == 413
    r = await server.http.post("/api/music/uploads", content=b"x")
    assert r.status_code == 401
    await asyncio.sleep(0)
    uploads = server.app_state.settings.upload_dir
    assert not uploads.exists() or not any(uploads.iterdir())  # nothing kept
