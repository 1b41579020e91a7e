"""Redis lost while nodes run: rooms already placed keep working, new joins get a
clear ``unavailable``, nothing crashes, and service resumes when Redis returns.

Uses a redis-server of its own (the shared one cannot be stopped), on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.server_helpers import WsClient, live_server
from tests.services import missing, stop_process
from tests.test_cluster_voice import free_port

BACK_WITHIN_S = 15.0


class OwnRedis:
    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary, self.port, self.workdir = binary, port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except Exception:
                    await asyncio.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server (Debian package redis-server)")
    assert binary is not None
    server = OwnRedis(binary, free_port(), tmp_path)
    await server.start()
    yield server
    await server.stop()


async def request_until(ws: WsClient, message: dict[str, object], reply: str,
                        timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    n = 0
    while True:
        n += 1
        rid = f"try-{n}"
        await ws.send({**message, "id": rid})
        got = await ws.expect_any({reply, "error"}, timeout_s=5, id=rid)
        if got["type"] == reply:
            return got
        assert time.monotonic() < deadline, f"not back within {timeout_s} s: {got}"
        await asyncio.sleep(0.3)


async def test_nodes_ride_out_a_redis_outage(settings: Settings, postgres_url: str,
                                             own_redis: OwnRedis) -> None:
    shared = settings.model_copy(update={"database_url": postgres_url,
                                         "redis_url": own_redis.url})
    async with live_server(shared.model_copy(update={"node_id": "a"})) as a, \
            live_server(shared.model_copy(update={"node_id": "b"})) as b:
        ann, _ = await a.register("ann")
        bob, _ = await a.register("bob")
        g1 = await a.group_with(ann, bob, name="one")
        g2 = await a.group_with(ann, bob, name="two")
        ann_a, bob_b = await a.connect(ann), await b.connect(bob)
        await ann_a.request({"type": "join", "room": f"group:{g1}"}, "joined")

        await own_redis.stop()
        # The room placed before keeps working on its node.
        muted = await ann_a.request({"type": "mute", "room": f"group:{g1}", "muted": True},
                                    "muted")
        assert muted["muted"] is True
        # A new room cannot be placed: a clear error, not a hang or a crash.
        await bob_b.send({"type": "join", "room": f"group:{g2}", "id": "j"})
        error = await bob_b.expect("error", id="j", timeout_s=10)
        assert error["code"] == "unavailable", error
        await ann_a.send({"type": "chat", "room": f"group:{g1}", "text": "hello?", "id": "c"})
        assert (await ann_a.expect("error", id="c", timeout_s=10))["code"] == "unavailable"
        for node in (a, b):
            assert (await node.http.get("/healthz")).status_code == 200

        await own_redis.start()  # same port, empty: nodes register and claim again
        room = f"group:{g1}"
        await request_until(bob_b, {"type": "join", "room": room}, "joined", BACK_WITHIN_S)
        # bob's join may have been placed on b before a re-asserted its claim: then
        # one side of the split is told to move and joins again. One call either way.
        deadline = time.monotonic() + BACK_WITHIN_S
        while True:
            together = [a.app_state.rooms.get(room), b.app_state.rooms.get(room)]
            hosts = [r for r in together if r is not None and r.participants]
            if len(hosts) == 1 and len(hosts[0].participants) == 2:
                break
            assert time.monotonic() < deadline, "the room stayed split"
            for ws in (ann_a, bob_b):
                with contextlib.suppress(TimeoutError):
                    await ws.expect("left", timeout_s=0.2, room=room, reason="moved")
                    await request_until(ws, {"type": "join", "room": room}, "joined", 5)
        await request_until(bob_b, {"type": "chat", "room": room, "text": "back"},
                            "chat_sent", BACK_WITHIN_S)
        assert (await ann_a.expect("chat", timeout_s=5))["text"] == "back"
        await ann_a.close()
        await bob_b.close()


