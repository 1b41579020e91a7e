"""The desktop client's pure parts, no event loop: protocol, audio logic, commands, GPX."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.desktop import controls, gpx, protocol
from clients.desktop.audio import (
    FRAME_SAMPLES,
    EchoGuard,
    MicControl,
    PlayoutBuffer,
    Resampler,
    SampleBuffer,
    level_dbfs,
    scale,
    to_mono,
)
from clients.desktop.errors import AuthFailed, BadInputFile, RoomNotFound, UsageError
from clients.desktop.files import FileSource
from clients.desktop.options import BACKOFF_MAX_S, backoff_s
from tests.rtc_helpers import has_tone, tone_level_db, write_tone_file


def sine(freq_hz: float, seconds: float, rate_hz: int = 48_000, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (np.sin(2 * np.pi * freq_hz * t) * amp * 32_767).astype(np.int16)


# --- protocol -----------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "http", "ws"), [
    ("127.0.0.1:8080", "http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws?token=T"),
    ("http://h:1/", "http://h:1", "ws://h:1/ws?token=T"),
    ("https://disco.example/base", "https://disco.example/base",
     "wss://disco.example/base/ws?token=T"),
    ("wss://disco.example/ws", "https://disco.example", "wss://disco.example/ws?token=T"),
])
def test_server_urls(server: str, http: str, ws: str) -> None:
    assert protocol.http_base(server) == http
    assert protocol.ws_url(server, "T") == ws


def test_loopback_detection_and_bad_urls() -> None:
    assert protocol.is_loopback_server("http://127.0.0.1:1")
    assert protocol.is_loopback_server("http://localhost:1")
    assert protocol.is_loopback_server("http://[::1]:1")
    assert not protocol.is_loopback_server("http://192.0.2.1:1")
    assert not protocol.is_loopback_server("https://disco.example")
    with pytest.raises(UsageError):
        protocol.http_base("ftp://x")


def test_messages_go_through_the_server_schema() -> None:
    assert protocol.join("nearby", 500) == {"type": "join", "room": "nearby", "radius_m": 500}
    assert protocol.join("group:3") == {"type": "join", "room": "group:3"}
    assert protocol.offer("group:3", "v=0", ["1"])["music_mids"] == ["1"]
    assert protocol.location(46.5, 7.9, 10, 1.0, None) == {
        "type": "location", "lat": 46.5, "lon": 7.9, "accuracy_m": 10, "ts": 1.0}
    with pytest.raises(UsageError, match="radius_m"):
        protocol.join("nearby", 50)
    with pytest.raises(UsageError, match="gain"):
        protocol.volume("p_1", 3.0)
    with pytest.raises(UsageError):
        protocol.location(91, 0, 10, 1.0)
    with pytest.raises(UsageError, match="--radius"):
        protocol.check_radius(5000)


def test_login_replies() -> None:
    assert protocol.token_from_login(200, {"access_token": "abc"}) == "abc"
    with pytest.raises(AuthFailed, match="401"):
        protocol.token_from_login(401, {"message": "wrong username or password"})
    with pytest.raises(AuthFailed):
        protocol.token_from_login(500, "oops")


GROUPS = {"groups": [{"id": 3, "name": "Crew"}, {"id": 4, "name": "Hikers"},
                     {"id": 5, "name": "hikers"}]}


@pytest.mark.parametrize(("wanted", "room"), [
    ("3", "group:3"), ("group:4", "group:4"), ("crew", "group:3"), (" CREW ", "group:3"),
])
def test_resolve_group(wanted: str, room: str) -> None:
    assert protocol.resolve_group(GROUPS, wanted) == room


@pytest.mark.parametrize(("wanted", "message"), [
    ("hikers", "2 of your groups are named"), ("9", "no group '9'"), ("nope", r"yours: Crew \(3\)"),
])
def test_resolve_group_refuses(wanted: str, message: str) -> None:
    with pytest.raises(RoomNotFound, match=message):
        protocol.resolve_group(GROUPS, wanted)


def test_join_errors_map_to_exit_codes() -> None:
    assert isinstance(protocol.join_error("group:1", {"code": "not_found"}), RoomNotFound)
    assert isinstance(protocol.join_error("group:1", {"code": "forbidden"}), RoomNotFound)
    assert isinstance(protocol.join_error("group:1", {"code": "unauthorized"}), AuthFailed)


def test_room_state_follows_events() -> None:
    state = protocol.RoomState(room="group:1", my_name="alice")
    state.joined({"room": "group:1", "participant_id": "p_me", "music_allowed": True,
                  "participants": [{"participant_id": "p_b", "display_name": "bob",
                                    "user_id": 2, "muted": False}]})
    assert state.apply({"type": "participant_joined", "room": "group:1",
                        "participant_id": "p_c", "display_name": "carol"}) == ["carol joined"]
    state.apply({"type": "speaking", "room": "group:1", "participant_id": "p_b"})
    state.apply({"type": "speaking", "room": "group:1", "participant_id": "p_me"})
    assert state.participants["p_b"].speaking and state.speaking_me
    assert state.apply({"type": "speaking", "room": "other", "participant_id": "p_c"}) == []
    assert state.apply({"type": "participant_muted", "room": "group:1", "participant_id": "p_c",
                        "muted": True}) == ["carol muted"]
    text = state.render()
    assert "  *  1 bob" in text and "carol [muted]" in text and "alice (you)" in text
    assert state.find("2").display_name == "carol"
    assert state.find("BO").participant_id == "p_b"
    with pytest.raises(LookupError):
        state.find("zed")
    assert state.apply({"type": "participant_left", "room": "group:1",
                        "participant_id": "p_b"}) == ["bob left"]
    assert list(state.participants) == ["p_c"]


def test_joined_reply_says_who_is_already_speaking() -> None:
    """A speaker's event went out before we joined: the reply's flag is all we get."""
    state = protocol.RoomState(room="group:1", my_name="alice")
    state.joined({"room": "group:1", "participant_id": "p_me", "participants": [
        {"participant_id": "p_b", "display_name": "bob", "speaking": True},
        {"participant_id": "p_c", "display_name": "carol", "speaking": False}]})
    assert [p.display_name for p in state.participants.values() if p.speaking] == ["bob"]
    assert "  *  1 bob" in state.render() and "  *  2 carol" not in state.render()


# --- audio -----------------------------------------------------------------------------------


def test_sample_buffer_drops_oldest_and_never_grows() -> None:
    buf = SampleBuffer(max_samples=1000)
    for n in range(5):
        buf.push(np.full(300, n, dtype=np.int16))
    assert len(buf) == 1000 and buf.dropped_samples == 500
    out = buf.pop(1000)
    assert out is not None and out[0] == 1 and out[-1] == 4  # the oldest went
    assert buf.pop(1) is None


def test_playout_buffer_prefills_after_an_underrun() -> None:
    buf = PlayoutBuffer(max_samples=4000, prefill=1920)
    buf.push(np.ones(960, dtype=np.int16))
    assert not buf.read(960).any()  # below the prefill: silence, nothing taken
    buf.push(np.ones(960, dtype=np.int16))
    assert buf.read(960).all() and buf.read(960).all()
    assert not buf.read(960).any() and buf.underruns == 1


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 96_000])
def test_resampler_keeps_pitch_and_length_in_pieces(rate: int) -> None:
    tone = sine(1000, 1.0, rate)
    rs = Resampler(rate, 48_000)
    out = np.concatenate([rs.convert(tone[i : i + 441]) for i in range(0, tone.size, 441)])
    assert abs(out.size - 48_000) < 200  # the filter holds back a few samples at most
    assert has_tone(out[2000:], 1000)


def test_to_mono_and_levels() -> None:
    stereo = np.stack([sine(440, 0.1), sine(440, 0.1)], axis=1)
    assert np.array_equal(to_mono(stereo), sine(440, 0.1))
    assert to_mono(np.array([0.5, -0.5], dtype=np.float32)).tolist() == [16383, -16383]
    assert level_dbfs(np.zeros(960, np.int16)) == -120.0
    assert level_dbfs(sine(440, 0.1, amp=1.0)) == pytest.approx(-3.0, abs=0.1)
    assert scale(np.array([20_000], np.int16), 2.0).tolist() == [32767]


def test_mic_control() -> None:
    mic = MicControl()
    assert mic.on_air
    mic.toggle_push_to_talk()
    assert not mic.on_air
    mic.toggle_talk()
    assert mic.on_air
    mic.toggle_mute()
    assert not mic.on_air


def test_echo_guard_ducks_while_the_mix_is_loud_and_recovers() -> None:
    guard = EchoGuard()
    mic = sine(300, 0.02)
    loud, quiet = sine(500, 0.02, amp=0.3), np.zeros(FRAME_SAMPLES, np.int16)
    t = 0.0
    for _ in range(10):  # the room is loud: the mic goes down to the duck gain
        guard.note_playback(loud, t)
        out = guard.apply(mic, t)
        t += 0.02
    assert guard.ducking
    assert level_dbfs(out) == pytest.approx(level_dbfs(mic) + 20 * math.log10(guard.duck_gain),
                                            abs=0.5)
    for _ in range(40):  # quiet for 0.8 s: past the hold and the ramp, full gain again
        guard.note_playback(quiet, t)
        out = guard.apply(mic, t)
        t += 0.02
    assert not guard.ducking and np.array_equal(out, mic)


# --- files ----------------------------------------------------------------------------------


def test_file_source_converts_rate_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    write_tone_file(path, 550, seconds=1.0, rate_hz=22_050)  # stereo, 22.05 kHz
    src = FileSource(path)
    assert "22050 Hz, 2 channel(s)" in src.description
    frames = []
    while (f := src.read_frame()) is not None:
        assert f.size == FRAME_SAMPLES
        frames.append(f)
    assert len(frames) == pytest.approx(50, abs=1)
    assert tone_level_db(np.concatenate(frames), 550) == pytest.approx(-12, abs=1.5)
    looped = FileSource(path, loop=True)
    assert all(looped.read_frame() is not None for _ in range(120))


def test_file_source_refuses_what_is_not_audio(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(BadInputFile):
        FileSource(tmp_path / "x.wav")
    with pytest.raises(BadInputFile, match="not found"):
        FileSource(tmp_path / "missing.wav")


# --- commands, GPX, backoff ----------------------------------------------------------------


@pytest.mark.parametrize(("line", "kind"), [
    ("m", "mute"), ("p", "ptt"), ("", "talk"), ("t", "talk"), ("q", "quit"), ("l", "list"),
    ("music stop", "music_stop"), ("h", "help"),
])
def test_simple_commands(line: str, kind: str) -> None:
    assert controls.parse(line).kind == kind


def test_commands_with_arguments() -> None:
    assert controls.parse("v bob 0.5") == controls.Command("volume", who="bob", gain=0.5)
    assert controls.parse('music "my song.ogg"').path == Path("my song.ogg")
    for bad in ("v bob", "v bob loud", "music", "dance", 'music "open'):
        with pytest.raises(controls.CommandError):
            controls.parse(bad)


GPX = """<?xml version="1.0"?>
<gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
<trkpt lat="46.0" lon="7.0"><time>2024-05-01T10:00:00Z</time></trkpt>
<trkpt lat="46.001" lon="7.0"><time>2024-05-01T10:00:10Z</time></trkpt>
<trkpt lat="46.002" lon="7.0"><time>2024-05-01T10:00:30Z</time></trkpt>
</trkseg></trk></gpx>"""


def test_gpx_replay_interpolates_at_recorded_pace() -> None:
    replay = gpx.Replay(gpx.parse(GPX), speed=2.0)
    assert replay.duration_s == 15.0
    lat, lon, mps = replay.position(2.5)  # 5 s of track time: half way to point 2
    assert lat == pytest.approx(46.0005) and lon == 7.0
    assert mps == pytest.approx(111.2 / 10 * 2, rel=0.01)
    assert replay.position(100)[:2] == (46.002, 7.0)
    assert replay.position(-1)[:2] == (46.0, 7.0)


def test_gpx_without_times_and_bad_gpx() -> None:
    points = gpx.parse('<gpx><rte><rtept lat="1" lon="2"/><rtept lat="1.1" lon="2"/></rte></gpx>')
    assert [p.t_s for p in points] == [0.0, gpx.DEFAULT_STEP_S]
    for bad in ("<gpx>", "<gpx></gpx>", '<gpx><wpt lat="95" lon="0"/></gpx>'):
        with pytest.raises(BadInputFile):
            gpx.parse(bad)


def test_backoff_grows_to_a_cap_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_s(n, rng=rng) for n in range(10)]
    assert delays[0] < 1.0 < delays[2] < delays[3]
    assert all(d <= BACKOFF_MAX_S * 1.2 for d in delays)
    assert backoff_s(50, max_s=2.0, rng=rng) <= 2.4


def test_nearby_event_replaces_the_people_we_hear() -> None:
    state = protocol.RoomState(room="nearby", my_name="me")
    state.joined({"room": "nearby", "participant_id": "p_me", "participants": []})
    notes = state.apply({"type": "nearby", "room": "nearby", "radius_m": 300, "people": [
        {"participant_id": "p_r", "display_name": "Rider", "distance": 50, "gain": 0.8}]})
    assert notes == ["nearby: Rider (50)"] and list(state.participants) == ["p_r"]
    assert state.apply({"type": "nearby", "room": "nearby", "people": []}) == [
        "nearby: nobody within earshot"]
    assert state.participants == {}


def test_a_quality_event_is_one_console_line() -> None:
    from clients.desktop.protocol import quality_line

    assert quality_line({"type": "quality", "quality": "poor", "loss_percent": 12.5,
                         "jitter_ms": 31.0, "rtt_ms": 180}) == (
        "connection quality: poor (12.5% loss, 31 ms jitter, 180 ms RTT)")
    assert quality_line({"quality": "good", "rtt_ms": True}) == "connection quality: good"


@pytest.mark.parametrize(("message", "rejoin"), [
    ({"type": "reconnect", "reason": "draining"}, True),
    ({"type": "left", "room": "group:3", "reason": "host_lost"}, True),
    ({"type": "left", "room": "group:3", "reason": "moved"}, True),
    ({"type": "left", "room": "group:4", "reason": "host_lost"}, False),  # another room
    ({"type": "left", "room": "group:3", "reason": "replaced"}, False),
    ({"type": "error", "code": "moved"}, True),
    ({"type": "error", "code": "not_found"}, False),
])
def test_which_messages_mean_the_calls_node_is_gone(message: dict[str, Any], rejoin: bool
                                                   ) -> None:
    from clients.desktop.protocol import room_node_lost

    assert room_node_lost(message, "group:3") is rejoin
