"""TURN end to end: the repo's turnserver.conf in a real coturn, credentials from `welcome`.

Each client is relay-only (``iceTransportPolicy=relay``), so audio can only
flow through coturn, and coturn only relays for credentials made with its
``static-auth-secret``: the one Disco signs ``welcome.ice_servers`` with.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCIceServer

from common.settings import Settings
from protocol import aiortc_compat
from tests.rtc_helpers import RtcClient, free_port, has_tone, loopback_ice
from tests.server_helpers import LiveServer, live_server
from tests.services import require_binary

REPO_CONF = Path(__file__).resolve().parents[1] / "turnserver.conf"
WRONG_SECRET_TIMEOUT_S = 6.0


@contextlib.asynccontextmanager
async def repo_coturn(secret: str) -> AsyncIterator[str]:
    """coturn with the repo's turnserver.conf; only addresses and ports overridden.

    The shipped config denies relaying to loopback and private peers (good in
    production); the test allows exactly 127.0.0.1, where the server listens.
    """
    binary = require_binary("turnserver", "coturn")
    port, relay_min = free_port(), random.randrange(40_000, 60_000, 100)
    log_path = Path(tempfile.mkdtemp(prefix="coturn-conf-")) / "turn.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(REPO_CONF), "--log-file=stdout",
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            f"--min-port={relay_min}", f"--max-port={relay_min + 99}",
            f"--static-auth-secret={secret}", "--allowed-peer-ip=127.0.0.1",
            "--allow-loopback-peers", "--no-tls", "--no-dtls",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )
    try:
        for _ in range(100):
            if proc.returncode is not None:
                raise RuntimeError(f"coturn refused turnserver.conf; see {log_path}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"coturn did not start listening; see {log_path}")
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def turn_server(settings: Settings, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[tuple[LiveServer, str]]:
    loopback_ice(monkeypatch)
    secret = secrets.token_hex(16)
    async with repo_coturn(secret) as url:
        configured = settings.model_copy(update={
            "rtc_host_addresses": ["127.0.0.1"], "turn_urls": [url], "turn_secret": secret,
        })
        async with live_server(configured) as server:
            yield server, secret


def from_welcome(welcome: dict[str, object]) -> list[RTCIceServer]:
    servers = welcome["ice_servers"]
    assert isinstance(servers, list) and servers, "welcome carries no ICE servers"
    return [RTCIceServer(urls=s["urls"][0], username=s["username"], credential=s["credential"])
            for s in servers]


async def connect(server: LiveServer, token: str, room: str, tone_hz: float,
                  ice: list[RTCIceServer] | None = None) -> RtcClient:
    ws = await server.connect(token)
    await ws.request({"type": "join", "room": room}, "joined")
    client = RtcClient(f"c{tone_hz:g}", tone_hz, relay_only=True,
                       ice_servers=ice if ice is not None else from_welcome(ws.welcome))
    answer = await ws.request({"type": "offer", "room": room, "sdp": await client.offer()},
                              "answer")
    await client.accept(answer["sdp"])
    return client


async def test_relay_only_through_coturn_with_welcome_credentials(
    turn_server: tuple[LiveServer, str],
) -> None:
    server, _ = turn_server
    a, _ = await server.register("alice")
    b, _ = await server.register("bob")
    room = f"group:{await server.group_with(a, b)}"
    alice = await connect(server, a, room, 440.0)
    bob = await connect(server, b, room, 660.0)
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        ice = alice.pc.getTransceivers()[0].receiver.transport.transport
        local = aiortc_compat.nominated_local_candidate(ice)  # the pair ICE chose
        assert local is not None and local.type == "relay", f"expected a relayed path: {local}"
        await alice.recorder.wait_frames(50)
        await asyncio.sleep(1.0)
        assert has_tone(alice.recorder.last(1.0), 660.0)
        assert has_tone(bob.recorder.last(1.0), 440.0)
    finally:
        await alice.close()
        await bob.close()


async def test_wrong_turn_secret_fails_with_a_clear_timeout(
    turn_server: tuple[LiveServer, str],
) -> None:
    server, _ = turn_server
    token, _ = await server.register("alice")
    room = f"group:{await server.group_with(token)}"
    ws = await server.connect(token)
    good = from_welcome(ws.welcome)[0]
    forged = [RTCIceServer(urls=good.urls, username=good.username,
                           credential="d3JvbmctY3JlZGVudGlhbA==")]
    await ws.close()
    client = await connect(server, token, room, 440.0, ice=forged)
    try:
        with pytest.raises(TimeoutError, match="TURN server refused the credentials"):
            await client.wait_connected(timeout_s=WRONG_SECRET_TIMEOUT_S)
    finally:
        await client.close()
