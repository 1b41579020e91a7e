"""Headless ``disco-client`` runs against a real server: WAV in, WAV out, commands on stdin.

The server runs in-process (``live_server``) with the real SFU; each client is
the installed ``disco-client`` command in its own process. Tones identify who
is heard: each output file must hold the other's tone and not its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.rtc_helpers import describe_tones, has_tone, lacks_tone, tone_level_db, write_tone_file
from tests.server_helpers import LiveServer
from tests.test_client_support import (
    ClientProcess,
    crew,
    read_wav,
    window,
    write_mono_wav,
)

A_HZ, B_HZ, MUSIC_HZ = 440.0, 880.0, 660.0
DURATION_S = 6.0


@pytest.fixture
def server(media_server: LiveServer) -> LiveServer:
    return media_server


async def test_two_headless_clients_hear_each_other_and_not_themselves(
    server: LiveServer, tmp_path: Path
) -> None:
    group_id, (_, bob_token) = await crew(server, "alice", "bob")
    # Alice's input is 48 kHz mono; Bob's is 44.1 kHz stereo: converted on the way in.
    a_in = write_mono_wav(tmp_path / "a.wav", A_HZ, 12.0)
    b_in = tmp_path / "b.wav"
    write_tone_file(b_in, B_HZ, seconds=12.0, rate_hz=44_100)
    a_out, b_out = tmp_path / "a_out.wav", tmp_path / "b_out.wav"
    alice = ClientProcess(["--server", server.base_url, "--username", "alice", "--group", "crew",
                           "--input-file", str(a_in), "--output-file", str(a_out),
                           "--duration", str(DURATION_S)])
    bob = ClientProcess(["--server", server.base_url, "--token", bob_token,
                         "--group", str(group_id), "--input-file", str(b_in),
                         "--output-file", str(b_out), "--duration", str(DURATION_S)])
    try:
        await asyncio.gather(alice.start(), bob.start())
        codes = await asyncio.gather(alice.wait(), bob.wait())
    finally:
        await asyncio.gather(alice.close(), bob.close())
    assert codes == [0, 0], f"{alice.output()}\n{alice.stderr}\n{bob.output()}\n{bob.stderr}"
    for client in (alice, bob):
        assert client.count(f"joined group:{group_id}") == 1, client.output()
        assert client.count("audio: receiving the room's mix") >= 1, client.output()
        assert client.count(f"left group:{group_id}") == 1, client.output()
    assert "44100 Hz, 2 channel(s)" in bob.output()

    heard_by_alice, rate_a = read_wav(a_out)
    heard_by_bob, rate_b = read_wav(b_out)
    assert rate_a == rate_b == 48_000
    # The file's timeline is real time from media start: about DURATION_S long.
    assert heard_by_alice.size / rate_a == pytest.approx(DURATION_S, abs=1.5)
    mid_a, mid_b = window(heard_by_alice, 2.5, 5.0), window(heard_by_bob, 2.5, 5.0)
    assert has_tone(mid_a, B_HZ) and lacks_tone(mid_a, A_HZ), describe_tones(mid_a, [A_HZ, B_HZ])
    assert has_tone(mid_b, A_HZ) and lacks_tone(mid_b, B_HZ), describe_tones(mid_b, [A_HZ, B_HZ])


async def test_commands_mute_and_share_music(server: LiveServer, tmp_path: Path) -> None:
    """Line commands on stdin: Alice mutes (Bob stops hearing her), Bob shares music."""
    await crew(server, "alice", "bob")
    a_in = write_mono_wav(tmp_path / "a.wav", A_HZ, 30.0)
    b_in = write_mono_wav(tmp_path / "b.wav", B_HZ, 30.0)
    music = tmp_path / "song.flac"
    write_tone_file(music, MUSIC_HZ, seconds=30.0, amplitude=0.5)
    a_out, b_out = tmp_path / "a_out.wav", tmp_path / "b_out.wav"
    common = ["--server", server.base_url, "--group", "crew", "--commands"]
    alice = ClientProcess([*common, "--username", "alice", "--input-file", str(a_in),
                           "--output-file", str(a_out)], stdin=True)
    bob = ClientProcess([*common, "--username", "bob", "--input-file", str(b_in),
                         "--output-file", str(b_out)], stdin=True)
    try:
        await asyncio.gather(alice.start(), bob.start())
        await asyncio.gather(alice.wait_line("audio: receiving"), bob.wait_line("audio: receiving"))
        await asyncio.sleep(2.0)
        t_unmuted = len(read_wav(b_out)[0]) / 48_000

        await alice.send("m")
        await alice.wait_line("microphone muted")
        await bob.wait_line("alice muted")
        await asyncio.sleep(2.0)
        t_muted = len(read_wav(b_out)[0]) / 48_000

        await bob.send(f"music {music}")
        await bob.wait_line("music: song.flac")
        await alice.wait_line("room music")  # the server announces the client's music
        await asyncio.sleep(2.5)
        t_music = len(read_wav(a_out)[0]) / 48_000

        await bob.send("music /nonexistent/song.ogg")
        await bob.wait_line("audio file not found")  # a bad file is reported; Bob stays
        await alice.send("v bob 0")
        await alice.wait_line("volume of bob: 0")
        await asyncio.sleep(1.5)
        await alice.send("q")
        await bob.send("q")
        codes = await asyncio.gather(alice.wait(), bob.wait())
    finally:
        await asyncio.gather(alice.close(), bob.close())
    assert codes == [0, 0], f"{alice.output()}\n{alice.stderr}\n{bob.output()}\n{bob.stderr}"

    heard_by_bob, _ = read_wav(b_out)
    before = window(heard_by_bob, t_unmuted - 1.2, t_unmuted)
    after = window(heard_by_bob, t_muted - 1.2, t_muted)
    assert has_tone(before, A_HZ), describe_tones(before, [A_HZ])
    assert lacks_tone(after, A_HZ), describe_tones(after, [A_HZ])

    heard_by_alice, _ = read_wav(a_out)
    no_music = window(heard_by_alice, t_unmuted - 1.2, t_unmuted)
    with_music = window(heard_by_alice, t_music - 1.5, t_music)
    end = heard_by_alice[-int(0.8 * 48_000):]
    # Music is ducked under Bob's voice (-12 dB), so compare levels, not a fixed bar.
    assert tone_level_db(with_music, MUSIC_HZ) > tone_level_db(no_music, MUSIC_HZ) + 15
    assert has_tone(with_music, MUSIC_HZ, min_level_db=-35), describe_tones(with_music, [MUSIC_HZ])
    assert has_tone(with_music, B_HZ)
    # After "v bob 0" Alice no longer hears Bob's voice (the music bed is not his voice).
    assert lacks_tone(end, B_HZ), describe_tones(end, [B_HZ, MUSIC_HZ])
