"""Music in a live room: heard by everyone (the sharer too), ducked while
anyone talks, back after; client-side music tracks; entitlement; bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import BadRequest, LimitExceeded, NotFound
from sfu.room import MediaConfig, MediaRoom, StaticControls
from tests.rtc_helpers import (
    RtcClient,
    describe_tones,
    eventually,
    has_tone,
    join,
    lacks_tone,
    loopback_ice,
    record_for,
    steady_tone_level_db,
    write_tone_file,
)

MUSIC_HZ = 330.0
VOICE_HZ = 660.0
CLIENT_MUSIC_HZ = 550.0
DUCK_DB = -12.0
LIMIT = 2_000_000


@pytest.fixture
def music_dir(tmp_path: Path) -> Path:
    d = tmp_path / "music"
    d.mkdir()
    write_tone_file(d / "tone.wav", freq_hz=MUSIC_HZ, seconds=12.0, rate_hz=24_000)
    (d / "readme.txt").write_text("liner notes\n" * 50)
    (d / "big.wav").write_bytes(b"\0" * (LIMIT + 1))
    (tmp_path / "private.wav").write_bytes((d / "tone.wav").read_bytes()[:100_000])
    (d / "link.wav").symlink_to(tmp_path / "private.wav")
    return d


@pytest.fixture
def controls() -> StaticControls:
    """What the signaling room owns in the server: who is muted, whether music is allowed."""
    return StaticControls()


@pytest.fixture
async def room(
    monkeypatch: pytest.MonkeyPatch, music_dir: Path, tmp_path: Path, controls: StaticControls
) -> AsyncIterator[tuple[MediaRoom, list[dict[str, Any]]]]:
    loopback_ice(monkeypatch)
    events: list[dict[str, Any]] = []
    config = MediaConfig(
        duck_db=DUCK_DB,
        music_dir=music_dir,
        upload_dir=tmp_path / "uploads",
        max_upload_bytes=LIMIT,
    )
    media = MediaRoom("g-music", config, events.append, controls=controls)
    await media.start()
    yield media, events
    await media.close()


async def test_music_heard_by_all_and_ducked_while_someone_talks(
    room: tuple[MediaRoom, list[dict[str, Any]]],
) -> None:
    media, events = room
    clients = [RtcClient(n, None) for n in ("sharer", "talker", "listener")]
    try:
        await asyncio.gather(*(join(media, c) for c in clients))
        state = await media.music("play", by="sharer", source="tone.wav")
        assert state["status"] == "playing" and state["current"]["source"] == "tone.wav"
        assert any(e["type"] == "music_state" and e["status"] == "playing" for e in events)
        await asyncio.sleep(0.6)
        recorders = [c.recorder for c in clients]

        quiet = await record_for(recorders, 1.0)
        for c, heard in zip(clients, quiet, strict=True):
            assert has_tone(heard, MUSIC_HZ), f"{c.name}: {describe_tones(heard, [MUSIC_HZ])}"

        clients[1].tone.frequency_hz = VOICE_HZ  # someone talks
        await asyncio.sleep(0.4)
        talking = await record_for(recorders, 1.0)
        clients[1].tone.frequency_hz = None  # and stops
        await asyncio.sleep(1.5)  # hangover 0.5 s + release ramp 0.4 s + margin
        after = await record_for(recorders, 1.0)

        for c, q, t, a in zip(clients, quiet, talking, after, strict=True):
            base = steady_tone_level_db(q, MUSIC_HZ)
            ducked = steady_tone_level_db(t, MUSIC_HZ) - base
            recovered = steady_tone_level_db(a, MUSIC_HZ) - base
            assert ducked == pytest.approx(DUCK_DB, abs=2.5), f"{c.name} ducked by {ducked:.1f}"
            assert recovered == pytest.approx(0.0, abs=1.5), f"{c.name} back to {recovered:.1f}"
        assert has_tone(talking[0], VOICE_HZ) and has_tone(talking[2], VOICE_HZ)
        assert lacks_tone(talking[1], VOICE_HZ)  # the talker does not hear themselves

        state = await media.music("stop", by="listener")
        assert state["status"] == "stopped"
        await asyncio.sleep(0.3)
        (heard,) = await record_for([clients[2].recorder], 0.6)
        assert lacks_tone(heard, MUSIC_HZ)
    finally:
        for c in clients:
            await c.close()


async def test_client_music_track_is_music_not_voice(
    room: tuple[MediaRoom, list[dict[str, Any]]],
) -> None:
    media, events = room
    dj = RtcClient("dj", None, music_hz=CLIENT_MUSIC_HZ)
    friend = RtcClient("friend", None)
    try:
        await join(media, dj)
        await join(media, friend)
        assert media.music_state()["client_music"] == ["dj"]
        await asyncio.sleep(0.6)
        heard_dj, heard_friend = await record_for([dj.recorder, friend.recorder], 1.0)
        # music is in every mix, the sharer's included
        assert has_tone(heard_dj, CLIENT_MUSIC_HZ), describe_tones(heard_dj, [CLIENT_MUSIC_HZ])
        assert has_tone(heard_friend, CLIENT_MUSIC_HZ)
        # and it is not a voice: no speaking event for the DJ
        assert not any(e["type"] == "speaking" for e in events)
        base = steady_tone_level_db(heard_friend, CLIENT_MUSIC_HZ)
        dj.tone.frequency_hz = VOICE_HZ  # the DJ talks over their own music
        await asyncio.sleep(0.4)
        (heard_friend,) = await record_for([friend.recorder], 1.0)
        drop = steady_tone_level_db(heard_friend, CLIENT_MUSIC_HZ) - base
        assert drop == pytest.approx(DUCK_DB, abs=2.5)
        assert has_tone(heard_friend, VOICE_HZ)
    finally:
        await dj.close()
        await friend.close()


async def test_music_stops_when_no_longer_allowed(
    room: tuple[MediaRoom, list[dict[str, Any]]], controls: StaticControls,
) -> None:
    media, events = room
    client = RtcClient("a", None)
    try:
        await join(media, client)
        await media.music("play", by="a", source="tone.wav")
        await media.music("queue", by="a", source="tone.wav")
        await asyncio.sleep(0.5)
        controls.music_allowed = False  # the owner's plan lost music; the tick asks
        await eventually(lambda: media.music_state()["status"] == "stopped", 1.0,
                         "music stopped on a tick after it was disallowed")
        assert media.music_state()["allowed"] is False
        states = [e for e in events if e["type"] == "music_state"]
        assert states[-1]["allowed"] is False and states[-1]["status"] == "stopped"
        with pytest.raises(LimitExceeded):
            await media.music("play", by="a", source="tone.wav")
        await asyncio.sleep(0.3)
        (heard,) = await record_for([client.recorder], 0.6)
        assert lacks_tone(heard, MUSIC_HZ)
        controls.music_allowed = True
        state = await media.music("play", by="a", source="tone.wav")
        assert state["status"] == "playing"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("action", "source", "error"),
    [
        ("play", "missing.wav", NotFound),
        ("play", "readme.txt", BadRequest),  # not audio
        ("play", "big.wav", BadRequest),  # too large
        ("play", "../private.wav", BadRequest),
        ("play", "/etc/passwd", BadRequest),
        ("play", "link.wav", BadRequest),  # symlink leaving the folder
        ("play", None, BadRequest),
        ("queue", "", BadRequest),
        ("dance", "tone.wav", BadRequest),
        ("pause", None, BadRequest),  # nothing playing
        ("skip", None, BadRequest),
    ],
)
async def test_bad_music_requests_leave_the_room_alone(
    room: tuple[MediaRoom, list[dict[str, Any]]], action: str, source: str | None, error: type
) -> None:
    media, events = room
    with pytest.raises(error):
        await media.music(action, by="a", source=source)
    assert media.music_state()["status"] == "stopped"
    assert not events
    await eventually(lambda: media._task is not None and not media._task.done(), 0.1, "clock")
