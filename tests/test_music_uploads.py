"""Uploaded music lives in the database: a room on another node (its own upload folder)
plays it, on PostgreSQL as on SQLite; and it goes with its uploader's account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.settings import Settings
from groups.erasure import delete_account
from groups.uploads import MusicUpload
from sfu import music
from tests.rtc_helpers import write_tone_file
from tests.server_helpers import LiveServer, auth, live_server
from tests.test_music_routes import MUSIC_HZ, grant_music


@pytest.fixture
async def nodes(settings: Settings, tmp_path: Path, database_url: str
                ) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    """Two nodes on one database, each with an upload folder of its own (two machines)."""
    shared = {"database_url": database_url, "max_upload_bytes": 2_000_000}
    async with live_server(settings.model_copy(update={
                **shared, "node_id": "a", "upload_dir": tmp_path / "a-uploads"})) as a, \
            live_server(settings.model_copy(update={
                **shared, "node_id": "b", "upload_dir": tmp_path / "b-uploads"})) as b:
        yield a, b


async def test_music_uploaded_on_one_node_plays_in_a_room_on_another(
    nodes: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    a, b = nodes
    token, _ = await a.register("deejay")
    group = await a.group_with(token)
    await grant_music(a, "deejay")
    song = tmp_path / "song.wav"
    write_tone_file(song, MUSIC_HZ, seconds=2.0)
    r = await a.http.post("/api/music/uploads?filename=song.wav", content=song.read_bytes(),
                          headers=auth(token))
    assert r.status_code == 201, r.text
    source = r.json()["source"]
    assert not music.has_upload(b.app_state.settings.upload_dir, source)
    ws = await b.connect(token)
    try:
        await ws.request({"type": "join", "room": f"group:{group}"}, "joined")
        state = await ws.request({"type": "music", "action": "play", "source": source},
                                 "music_state")
        assert state["status"] == "playing" and state["current"]["source"] == source, state
        cached = sorted(b.app_state.settings.upload_dir.glob(source + ".*"))
        assert [p.read_bytes() for p in cached] == [song.read_bytes()]
        missing = "up-" + "0" * 24
        await ws.send({"type": "music", "action": "play", "source": missing})
        assert (await ws.expect("error"))["code"] == "not_found"
    finally:
        await ws.close()


async def test_an_upload_goes_with_its_uploaders_account(
    nodes: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    a, _ = nodes
    token, user = await a.register("deejay")
    song = tmp_path / "song.wav"
    write_tone_file(song, MUSIC_HZ, seconds=1.0)
    r = await a.http.post("/api/music/uploads?filename=song.wav", content=song.read_bytes(),
                          headers=auth(token))
    source = r.json()["source"]
    async with a.app_state.sessions() as db:
        assert await db.get(MusicUpload, source) is not None
        await delete_account(db, user["id"])
        await db.commit()
    async with a.app_state.sessions() as db:
        assert await db.get(MusicUpload, source) is None
