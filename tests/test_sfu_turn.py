"""Relay-only participants through a real coturn on 127.0.0.1.

The client is configured as a browser behind a strict NAT would be: only
relayed candidates (``iceTransportPolicy: relay``), with REST credentials
minted by ``signaling.turn.turn_credentials`` exactly as ``welcome`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sfu.room import MediaConfig, MediaRoom
from signaling.turn import turn_credentials
from tests.rtc_helpers import (
    Coturn,
    RtcClient,
    coturn,
    describe_tones,
    has_tone,
    join,
    loopback_ice,
    record_for,
)
from tests.services import require_binary

pytestmark = pytest.mark.coturn


@pytest.fixture
async def turn(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Coturn]:
    binary = require_binary("turnserver", "coturn")
    loopback_ice(monkeypatch)
    async with coturn(binary) as server:
        yield server


@pytest.fixture
async def room() -> AsyncIterator[MediaRoom]:
    events: list[dict[str, Any]] = []
    media = MediaRoom("g-turn", MediaConfig(), events.append)
    await media.start()
    yield media
    await media.close()


async def test_relay_only_client_hears_the_mix(turn: Coturn, room: MediaRoom) -> None:
    username, credential = turn_credentials(turn.secret, "relayed", time.time(), 600)
    direct = RtcClient("direct", 440.0)
    relayed = RtcClient(
        "relayed", 660.0, ice_servers=[turn.ice_server(username, credential)], relay_only=True
    )
    try:
        await join(room, direct)
        offer = await relayed.offer()
        candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" typ relay " in line for line in candidates), candidates
        await relayed.accept(await room.connect("relayed", offer))
        await relayed.wait_connected(timeout_s=10)
        await asyncio.sleep(0.6)
        heard_direct, heard_relayed = await record_for([direct.recorder, relayed.recorder], 1.0)
        assert has_tone(heard_relayed, 440.0), describe_tones(heard_relayed, [440, 660])
        assert has_tone(heard_direct, 660.0), describe_tones(heard_direct, [440, 660])
    finally:
        await direct.close()
        await relayed.close()


async def test_wrong_turn_secret_fails_with_a_clear_timeout(turn: Coturn, room: MediaRoom) -> None:
    username, credential = turn_credentials("not-the-secret", "mallory", time.time(), 600)
    client = RtcClient(
        "mallory", 660.0, ice_servers=[turn.ice_server(username, credential)], relay_only=True
    )
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="TURN"):
            await join(room, client, timeout_s=3.0)
    finally:
        await client.close()
    assert time.monotonic() - started < 20  # failed, did not hang
