"""A real sound device: PortAudio -> ALSA pulse plugin -> a private PulseAudio.

Alice uses sound devices like a user would: her "microphone" is the monitor
of the null sink ``disco_mic`` (the test plays a 440 Hz tone into it with
``paplay``); her "speaker" is the null sink ``disco_speaker`` (the test records
its monitor with ``parec``). The devices are opened at 44.1 kHz so the
conversion to and from 48 kHz is in the path. Bob is headless (880 Hz WAV).

Proves: what reaches Alice's sound card reaches Bob, and Bob reaches Alice's
speaker; Alice's speaker does not carry her own voice.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.pulse_helpers import pulseaudio
from tests.rtc_helpers import describe_tones, has_tone, lacks_tone
from tests.server_helpers import LiveServer
from tests.test_client_support import ClientProcess, crew, read_wav, write_mono_wav

pytestmark = pytest.mark.pulseaudio

A_HZ, B_HZ = 440.0, 880.0
DEVICE_RATE_HZ = 44_100
LISTEN_S = 3.0


@pytest.fixture
def server(media_server: LiveServer) -> LiveServer:
    return media_server


async def test_microphone_and_speaker_through_pulseaudio(
    server: LiveServer, tmp_path: Path
) -> None:
    async with pulseaudio(tmp_path / "pulse", ("disco_mic", "disco_speaker")) as pulse:
        await crew(server, "alice", "bob")
        tone_a = write_mono_wav(tmp_path / "a.wav", A_HZ, 40.0, rate_hz=44_100, channels=2)
        b_in = write_mono_wav(tmp_path / "b.wav", B_HZ, 40.0)
        b_out = tmp_path / "b_out.wav"
        player = await pulse.play("disco_mic", tone_a)
        alice = ClientProcess(
            ["--server", server.base_url, "--username", "alice", "--group", "crew",
             "--input", "pulse", "--output", "pulse", "--device-rate", str(DEVICE_RATE_HZ)],
            env=pulse.client_env(sink="disco_speaker", source="disco_mic.monitor"),
        )
        bob = ClientProcess(["--server", server.base_url, "--username", "bob", "--group", "crew",
                             "--input-file", str(b_in), "--output-file", str(b_out)])
        try:
            await asyncio.gather(alice.start(), bob.start())
            await asyncio.gather(alice.wait_line("audio: receiving"),
                                 bob.wait_line("audio: receiving"))
            # Not "alice speaking": if Alice was speaking before Bob joined, Bob never
            # gets that event (the joined reply does not say who is speaking).
            await asyncio.sleep(1.0)
            recording = await pulse.record("disco_speaker.monitor", tmp_path / "speaker.raw")
            await asyncio.sleep(LISTEN_S)
            assert player.returncode is None, "paplay stopped early"
            on_speaker = recording.last(LISTEN_S - 0.5)
            heard_by_bob = read_wav(b_out)[0][-int((LISTEN_S - 0.5) * 48_000):]
            for client in (alice, bob):
                assert client.proc is not None
                client.proc.send_signal(signal.SIGINT)
            codes = await asyncio.gather(alice.wait(20), bob.wait(20))
        finally:
            await asyncio.gather(alice.close(), bob.close())
    assert codes == [0, 0], f"{alice.output()}\n{alice.stderr}\n{bob.output()}\n{bob.stderr}"
    assert f"{DEVICE_RATE_HZ} Hz" in alice.output(), alice.output()
    assert has_tone(heard_by_bob, A_HZ), describe_tones(heard_by_bob, [A_HZ, B_HZ])
    assert on_speaker.size > 0.5 * 48_000, "parec recorded nothing"
    assert has_tone(on_speaker, B_HZ), describe_tones(on_speaker, [A_HZ, B_HZ])
    assert lacks_tone(on_speaker, A_HZ), describe_tones(on_speaker, [A_HZ, B_HZ])
