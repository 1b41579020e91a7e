"""DISCO_RTC_PORT_MIN/MAX: the media of a running server binds inside the range an
operator opened, and a call through it still works (the test's own peer shares the
process, so it binds inside the range too)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import ValidationError

from common.settings import Settings
from protocol import aiortc_compat
from tests.rtc_helpers import RtcClient, has_tone, loopback_ice, record_for
from tests.server_helpers import LiveServer, live_server

FIRST_PORT, LAST_PORT = 46_100, 46_139


@pytest.fixture
def _range_reset() -> Iterator[None]:
    yield
    aiortc_compat.set_port_range(None, None)  # process-wide: leave no range behind


@pytest.fixture
async def server(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                 _range_reset: None) -> AsyncIterator[LiveServer]:
    loopback_ice(monkeypatch)
    ranged = settings.model_copy(update={"rtc_host_addresses": ["127.0.0.1"],
                                         "rtc_port_min": FIRST_PORT, "rtc_port_max": LAST_PORT})
    async with live_server(ranged) as s:
        yield s


def candidate_ports(sdp: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ \d \S+ \d+ \S+ (\d+) typ", sdp)]


async def test_the_answer_offers_ports_in_the_range_and_the_call_works(
    server: LiveServer
) -> None:
    alice, _ = await server.register("alice")
    bob, _ = await server.register("bob")
    group = await server.group_with(alice, bob)
    peers = []
    for token, tone in ((alice, 440.0), (bob, 660.0)):
        ws = await server.connect(token)
        await ws.request({"type": "join", "room": f"group:{group}"}, "joined")
        client = RtcClient(str(tone), tone)
        answer = await ws.request({"type": "offer", "room": f"group:{group}",
                                   "sdp": await client.offer()}, "answer")
        ports = candidate_ports(answer["sdp"])
        assert ports and all(FIRST_PORT <= p <= LAST_PORT for p in ports), ports
        await client.accept(answer["sdp"])
        await client.wait_connected()
        peers.append(client)
    (heard,) = await record_for([peers[0].recorder], 1.0)
    assert has_tone(heard, 660.0)
    for client in peers:
        await client.close()


@pytest.mark.parametrize(("low", "high", "says"), [
    (40_000, None, "together"),
    (41_000, 40_000, "above"),
    (80, 90, "greater than or equal to 1024"),
])
def test_bad_port_settings_are_refused_with_the_setting_named(
    low: int | None, high: int | None, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None, rtc_port_min=low, rtc_port_max=high)  # type: ignore[call-arg]
