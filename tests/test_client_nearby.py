"""Guests in the nearby room: guest login, a fixed position and a GPX replay, voice both ways.

Location messages go out before the join and then periodically; a server
that has no location handler answers with an error, which the client reports
once and then stops sending (the talk goes on).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.rtc_helpers import describe_tones, has_tone, lacks_tone
from tests.server_helpers import LiveServer
from tests.test_client_support import (
    ClientProcess,
    read_wav,
    window,
    write_mono_wav,
)

A_HZ, B_HZ = 440.0, 880.0
TRACK = """<gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
<trkpt lat="46.0000" lon="7.0"/><trkpt lat="46.0004" lon="7.0"/><trkpt lat="46.0008" lon="7.0"/>
</trkseg></trk></gpx>"""


@pytest.fixture
def server(media_server: LiveServer) -> LiveServer:
    return media_server


async def test_two_guests_talk_in_the_nearby_room(server: LiveServer, tmp_path: Path) -> None:
    track = tmp_path / "ride.gpx"
    track.write_text(TRACK)
    outs = [tmp_path / "walker.wav", tmp_path / "rider.wav"]
    common = ["--server", server.base_url, "--nearby", "--radius", "300", "--duration", "6"]
    walker = ClientProcess([*common, "--guest", "Walker", "--lat", "46.0", "--lon", "7.0",
                            "--input-file", str(write_mono_wav(tmp_path / "a.wav", A_HZ, 10)),
                            "--output-file", str(outs[0])])
    rider = ClientProcess([*common, "--guest", "Rider", "--gpx", str(track), "--gpx-speed", "5",
                           "--input-file", str(write_mono_wav(tmp_path / "b.wav", B_HZ, 10)),
                           "--output-file", str(outs[1])])
    try:
        await asyncio.gather(walker.start(), rider.start())
        codes = await asyncio.gather(walker.wait(), rider.wait())
    finally:
        await asyncio.gather(walker.close(), rider.close())
    assert codes == [0, 0], f"{walker.output()}\n{walker.stderr}\n{rider.output()}"
    for client, name in ((walker, "Walker"), (rider, "Rider")):
        assert client.count(f"joined nearby as {name}") == 1, client.output()
        assert client.count("location not accepted") <= 1, client.output()
    heard_walker = window(read_wav(outs[0])[0], 2.5, 5.0)
    heard_rider = window(read_wav(outs[1])[0], 2.5, 5.0)
    assert has_tone(heard_walker, B_HZ), describe_tones(heard_walker, [A_HZ, B_HZ])
    assert lacks_tone(heard_walker, A_HZ), describe_tones(heard_walker, [A_HZ, B_HZ])
    assert has_tone(heard_rider, A_HZ), describe_tones(heard_rider, [A_HZ, B_HZ])
    assert lacks_tone(heard_rider, B_HZ), describe_tones(heard_rider, [A_HZ, B_HZ])
