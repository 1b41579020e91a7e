"""Resilience: the server is stopped and started again; clients come back on their own.

The server runs as ``disco serve`` in a subprocess (a restart needs a real
process), on a fixed port and SQLite file so accounts, groups and tokens
survive the restart. Two headless clients talk; after the restart each must
be back in the room and hearing the other, then Ctrl-C (SIGINT) must leave
cleanly with exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.settings import Settings
from tests.rtc_helpers import describe_tones, free_port, has_tone, lacks_tone
from tests.server_helpers import PASSWORD, live_server
from tests.services import stop_process
from tests.test_client_support import ClientProcess, media_settings, read_wav, write_mono_wav

A_HZ, B_HZ = 440.0, 880.0
SERVER_START_TIMEOUT_S = 30.0
BACK_TIMEOUT_S = 20.0
"""Generous for a shared machine; the time actually taken is printed."""


class DiscoServer:
    """``disco serve`` as a user runs it, restartable on the same port and database."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DISCO_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'disco.db'}",
            "DISCO_JWT_SECRET": "reconnect-test-" + secrets.token_hex(16),
            "DISCO_RTC_HOST_ADDRESSES": "127.0.0.1",
            "DISCO_UPLOAD_DIR": str(tmp / "uploads"),
            "DISCO_LOG_LEVEL": "warning",
        }
        self.log = tmp / "server.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        disco = Path(sys.executable).with_name("disco")
        command = [str(disco)] if disco.exists() else [sys.executable, "-m", "signaling.cli"]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command, "serve", "--port", str(self.port), env=self.env,
                stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/api/auth/me")).status_code == 401:
                        return
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"disco serve did not start:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc, timeout_s=15)


@pytest.fixture
async def disco_server(tmp_path: Path) -> AsyncIterator[DiscoServer]:
    server = DiscoServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _crew(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        tokens = []
        for name in ("alice", "bob"):
            r = await http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
            assert r.status_code == 201, r.text
            tokens.append(r.json()["access_token"])
        head = [{"Authorization": f"Bearer {t}"} for t in tokens]
        group = (await http.post("/api/groups", json={"name": "crew"}, headers=head[0])).json()
        code = (await http.post(f"/api/groups/{group['id']}/invites", headers=head[0])).json()
        r = await http.post(f"/api/invites/{code['code']}/accept", headers=head[1])
        assert r.status_code == 200, r.text


async def test_clients_rejoin_and_hear_after_a_server_restart(
    disco_server: DiscoServer, tmp_path: Path
) -> None:
    await _crew(disco_server.url)
    a_out, b_out = tmp_path / "a_out.wav", tmp_path / "b_out.wav"
    clients = [
        ClientProcess(["--server", disco_server.url, "--username", name, "--group", "crew",
                       "--input-file", str(write_mono_wav(tmp_path / f"{name}.wav", hz, 60.0)),
                       "--output-file", str(out), "--max-backoff", "2", "--duration", "50"])
        for name, hz, out in (("alice", A_HZ, a_out), ("bob", B_HZ, b_out))
    ]
    alice, bob = clients
    try:
        # Bob first, already speaking when Alice joins: she learns it from the joined reply.
        await bob.start()
        await bob.wait_line("(you) speaking")
        await alice.start()
        await asyncio.gather(*(c.wait_line("audio: receiving") for c in clients))
        await asyncio.gather(alice.wait_line("bob speaking"), bob.wait_line("alice speaking"))

        await disco_server.stop()
        await asyncio.gather(*(c.wait_line("connection lost") for c in clients))
        heard_before = [alice.count("bob speaking"), bob.count("alice speaking")]
        await disco_server.start()
        restarted = time.monotonic()
        await asyncio.gather(*(c.wait_line("joined group:", BACK_TIMEOUT_S, occurrence=2)
                               for c in clients))
        await asyncio.gather(*(c.wait_line("audio: receiving", BACK_TIMEOUT_S, occurrence=2)
                               for c in clients))
        # Whoever rejoins second learns the other is speaking from the joined reply.
        await asyncio.gather(
            alice.wait_line("bob speaking", BACK_TIMEOUT_S, occurrence=heard_before[0] + 1),
            bob.wait_line("alice speaking", BACK_TIMEOUT_S, occurrence=heard_before[1] + 1))
        back_after = time.monotonic() - restarted
        print(f"both clients back in the room and hearing {back_after:.1f} s "
              "after the server was up again")
        await asyncio.sleep(2.0)
        ends = [len(read_wav(out)[0]) for out in (a_out, b_out)]

        for c in clients:  # Ctrl-C: leave cleanly
            assert c.proc is not None
            c.proc.send_signal(signal.SIGINT)
        codes = await asyncio.gather(*(c.wait(20) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert codes == [0, 0], f"{alice.output()}\n{alice.stderr}\n{bob.output()}\n{bob.stderr}"
    for c in clients:
        assert c.count("SIGINT: leaving the room") == 1 and c.count("left group:") == 1, c.output()

    heard_a = read_wav(a_out)[0][ends[0] - 48_000 : ends[0]]
    heard_b = read_wav(b_out)[0][ends[1] - 48_000 : ends[1]]
    for heard, other, own in ((heard_a, B_HZ, A_HZ), (heard_b, A_HZ, B_HZ)):
        assert has_tone(heard, other), describe_tones(heard, [A_HZ, B_HZ])
        assert lacks_tone(heard, own), describe_tones(heard, [A_HZ, B_HZ])


async def test_client_rejoins_when_the_rooms_node_goes(
    settings: Settings, postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Bob's client stays connected to node b while his room is relayed to node c;
    c stops, b says ``host_lost``, and the client joins again: the room is placed anew."""
    shared = media_settings(settings).model_copy(update={
        "database_url": postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix})
    async with live_server(shared.model_copy(update={"node_id": "b"})) as b:
        alice, _ = await b.register("alice")
        bob, _ = await b.register("bob")
        group = await b.group_with(alice, bob)
        room = f"group:{group}"
        client = ClientProcess(["--server", b.base_url, "--token", bob, "--group", str(group),
                                "--input-file", str(write_mono_wav(tmp_path / "b.wav", B_HZ,
                                                                   60.0)),
                                "--output-file", str(tmp_path / "b_out.wav"),
                                "--max-backoff", "1", "--duration", "40"])
        try:
            async with live_server(shared.model_copy(update={"node_id": "c"})) as c:
                alice_c = await c.connect(alice)
                await alice_c.request({"type": "join", "room": room}, "joined")  # c hosts it
                await client.start()
                await client.wait_line(f"joined {room}")
                await client.wait_line("audio: receiving")
                assert b.app_state.rooms.get(room) is None  # relayed: the call is on c
                await alice_c.close()
            await client.wait_line("went away", BACK_TIMEOUT_S)
            await client.wait_line(f"joined {room}", BACK_TIMEOUT_S, occurrence=2)
            await client.wait_line("audio: receiving", BACK_TIMEOUT_S, occurrence=2)
            assert b.app_state.rooms.get(room) is not None  # placed again, on b
            assert client.proc is not None
            client.proc.send_signal(signal.SIGINT)
            assert await client.wait(20) == 0, client.output()
        finally:
            await client.close()
