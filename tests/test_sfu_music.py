"""Music sources without the network: safe lookup, uploads, decoding, the queue
and the player's click-free transitions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from common.errors import BadRequest, MessageTooLarge, NotFound
from sfu.errors import BadMusicRequest, MusicNotFound, MusicTooLarge
from sfu.mixer import FRAME_SAMPLES
from sfu.music import (
    FileDecoder,
    MusicPlayer,
    MusicQueue,
    Track,
    probe_audio,
    resolve_source,
    save_upload,
)
from tests.rtc_helpers import tone_level_db, write_tone_file

LIMIT = 1_000_000


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(music_dir, upload_dir, outside) with a few files in them."""
    music = tmp_path / "music"
    uploads = tmp_path / "uploads"
    outside = tmp_path / "outside"
    for d in (music, uploads, outside, music / "albums"):
        d.mkdir()
    write_tone_file(music / "tone.wav", seconds=0.5)
    write_tone_file(music / "albums" / "song.flac", seconds=0.5)
    write_tone_file(outside / "secret.wav", seconds=0.5)
    (music / "notes.txt").write_text("not audio at all\n" * 100)
    (music / "fake.mp3").write_bytes(os.urandom(4000))
    (music / "huge.wav").write_bytes(b"\0" * (LIMIT + 1))
    (music / "escape.wav").symlink_to(outside / "secret.wav")
    (music / "escape_dir").symlink_to(outside)
    (music / "inner_link.wav").symlink_to(music / "tone.wav")
    return music, uploads, outside


@pytest.mark.parametrize("name", ["tone.wav", "albums/song.flac", "inner_link.wav", "./tone.wav"])
def test_resolves_inside_music_folder(folders: tuple[Path, Path, Path], name: str) -> None:
    music, uploads, _ = folders
    path = resolve_source(name, music, uploads, LIMIT)
    assert path.is_relative_to(music.resolve())
    assert probe_audio(path) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("../outside/secret.wav", BadMusicRequest),
        ("albums/../../outside/secret.wav", BadMusicRequest),
        ("/etc/passwd", BadMusicRequest),
        ("C:/Windows/win.ini", BadMusicRequest),
        ("..\\outside\\secret.wav", BadMusicRequest),
        ("escape.wav", BadMusicRequest),  # symlink out of the folder
        ("escape_dir/secret.wav", BadMusicRequest),  # via a symlinked directory
        ("tone.wav\x00.txt", BadMusicRequest),
        ("", BadMusicRequest),
        ("missing.wav", MusicNotFound),
        ("albums", MusicNotFound),  # a directory is not a file
        ("huge.wav", MusicTooLarge),
    ],
)
def test_rejects_sources_that_leave_or_do_not_exist(
    folders: tuple[Path, Path, Path], name: str, error: type[Exception]
) -> None:
    music, uploads, _ = folders
    with pytest.raises(error):
        resolve_source(name, music, uploads, LIMIT)


def test_error_classes_map_to_common_codes() -> None:
    assert issubclass(BadMusicRequest, BadRequest)
    assert issubclass(MusicNotFound, NotFound)
    assert issubclass(MusicTooLarge, MessageTooLarge)


@pytest.mark.parametrize("name", ["notes.txt", "fake.mp3"])
def test_not_audio_is_refused(folders: tuple[Path, Path, Path], name: str) -> None:
    music, uploads, _ = folders
    path = resolve_source(name, music, uploads, LIMIT)  # exists and is inside...
    with pytest.raises(BadMusicRequest, match="not an audio file"):
        probe_audio(path)  # ...but does not decode


def test_no_music_folder_configured(tmp_path: Path) -> None:
    with pytest.raises(MusicNotFound):
        resolve_source("tone.wav", None, tmp_path, LIMIT)


def test_upload_round_trip(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    music, uploads, _ = folders
    data = (music / "tone.wav").read_bytes()
    source = save_upload(uploads, "../../My Song.WAV", data, LIMIT)
    assert source.startswith("up-")
    assert save_upload(uploads, "again.wav", data, LIMIT) == source  # content-addressed
    stored = resolve_source(source, music, uploads, LIMIT)
    assert stored.parent == uploads.resolve() and stored.suffix == ".wav"
    assert [p.name for p in uploads.iterdir()] == [stored.name]  # no temp files left


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", BadMusicRequest),
        (b"just some text, definitely not audio " * 50, BadMusicRequest),
        (b"\0" * (LIMIT + 1), MusicTooLarge),
    ],
)
def test_bad_uploads(tmp_path: Path, data: bytes, error: type[Exception]) -> None:
    uploads = tmp_path / "uploads"
    with pytest.raises(error):
        save_upload(uploads, "x.mp3", data, LIMIT)
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_unknown_upload_id(tmp_path: Path) -> None:
    with pytest.raises(MusicNotFound):
        resolve_source("up-" + "0" * 24, None, tmp_path, LIMIT)


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_decoder_gives_48k_mono_frames(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t.{suffix}"
    write_tone_file(path, freq_hz=330, seconds=1.0, rate_hz=44_100)
    dec = FileDecoder(path)
    frames = []
    while (f := dec.next_frame()) is not None:
        assert f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16
        frames.append(f)
    dec.close()
    assert 49 <= len(frames) <= 52  # ~1 s at 20 ms (mp3 adds padding)
    pcm = np.concatenate(frames)
    assert tone_level_db(pcm[4800:-4800], 330) == pytest.approx(-12.0, abs=1.0)


# --- queue and player ------------------------------------------------------------------------


def track(name: str) -> Track:
    return Track(source=name, by="alice", path=Path(name))


def test_queue_state_machine() -> None:
    q = MusicQueue()
    q.enqueue(track("a"))  # idle: starts playing
    q.enqueue(track("b"))
    q.enqueue(track("c"))
    assert q.status == "playing" and q.current == track("a")
    q.pause()
    with pytest.raises(BadMusicRequest):
        q.pause()
    q.skip()  # skipping while paused stays paused
    assert q.current == track("b") and q.status == "paused"
    q.resume()
    q.play(track("d"))  # play replaces current, keeps the queue
    assert q.current == track("d") and [t.source for t in q.queue] == ["c"]
    q.skip()
    q.skip()  # queue empty: stopped
    assert q.status == "stopped" and q.current is None
    with pytest.raises(BadMusicRequest):
        q.resume()
    state = q.state()
    assert state == {
        "type": "music_state",
        "status": "stopped",
        "current": None,
        "queue": [],
    }


class FakeDecoder:
    """A constant 'song' of ``frames`` frames at 20000."""

    def __init__(self, path: Path, frames: int = 5) -> None:
        self.left = frames

    def next_frame(self) -> np.ndarray | None:
        if self.left == 0:
            return None
        self.left -= 1
        return np.full(FRAME_SAMPLES, 20_000, dtype=np.int16)

    def close(self) -> None:
        pass


def pull(player: MusicPlayer, n: int) -> list[np.ndarray | None]:
    return [player.next_frame() for _ in range(n)]


def max_jump(frames: list[np.ndarray | None]) -> int:
    pcm = np.concatenate(
        [np.zeros(1, np.int16)]
        + [f if f is not None else np.zeros(FRAME_SAMPLES, np.int16) for f in frames]
        + [np.zeros(1, np.int16)]
    )
    return int(np.abs(np.diff(pcm.astype(np.int32))).max())


def test_player_fades_in_out_and_advances() -> None:
    player = MusicPlayer(open_decoder=lambda p: FakeDecoder(p, frames=8))  # type: ignore[arg-type,return-value]
    player.apply("queue", track("a"))
    player.apply("queue", track("b"))
    frames = pull(player, 3)
    player.apply("pause")
    frames += pull(player, 3)  # one faded tail, then silence
    assert frames[-1] is None and frames[-2] is None
    player.apply("resume")
    frames += pull(player, 2)
    player.apply("skip")
    frames += pull(player, 2)
    player.apply("stop")
    frames += pull(player, 2)
    # a 20000-step square wave would jump by 20000; fades keep every step small
    assert max_jump(frames) <= 20_000 // FRAME_SAMPLES + 2
    assert player.queue.status == "stopped" and player.changed


def test_player_plays_the_queue_gaplessly() -> None:
    player = MusicPlayer(open_decoder=lambda p: FakeDecoder(p, frames=3))  # type: ignore[arg-type,return-value]
    player.apply("queue", track("a"))
    player.apply("queue", track("b"))
    frames = pull(player, 8)
    assert [f is None for f in frames] == [False] * 6 + [True] * 2
    assert np.all(frames[3] == 20_000)  # b follows a without a fade or a gap
    assert player.queue.status == "stopped"


def test_player_stop_fades_out_and_reports_the_change_once() -> None:
    player = MusicPlayer(open_decoder=FakeDecoder)  # type: ignore[arg-type]
    player.apply("play", track("a"))
    assert player.take_changed() and not player.take_changed()
    frames = pull(player, 2)
    player.apply("stop")  # what the room does when the plan loses music
    frames += pull(player, 2)
    assert frames[-1] is None and player.queue.status == "stopped"
    assert max_jump(frames) <= 20_000 // FRAME_SAMPLES + 2
    assert player.take_changed() and not player.take_changed()
