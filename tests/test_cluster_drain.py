"""SIGTERM drains a node: its rooms move, its clients are told, nothing waits for expiry.

Two `disco serve` nodes on one PostgreSQL and Redis. alice (on n0) hosts the
room; bob (on n1) is relayed to it. SIGTERM to n0: alice is told to
``reconnect``, bob gets ``left`` ``host_lost`` at once (not after the 5 s
heartbeat expiry), n0 exits 0, and both are in one call on n1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.test_cluster_voice import DISCO, Node, connect, free_port, make_group, register

DRAINED_WITHIN_S = 2.0


async def start(name: str, env: dict[str, str], cwd: Path) -> Node:
    import httpx

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        DISCO, "serve", "--port", str(port), cwd=cwd, env={**env, "DISCO_NODE_ID": name},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    node = Node(name, port, proc)
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            try:
                if (await http.get(node.base + "/healthz")).status_code == 200:
                    return node
            except httpx.HTTPError:
                pass
            assert proc.returncode is None, f"{name} exited"
            await asyncio.sleep(0.2)
    raise AssertionError(f"{name} did not start")


async def test_sigterm_hands_the_room_over(postgres_url: str, redis_url: str,
                                           redis_prefix: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env.update(DISCO_DATABASE_URL=postgres_url, DISCO_REDIS_URL=redis_url,
               DISCO_REDIS_PREFIX=redis_prefix, DISCO_JWT_SECRET="drain-test-0123456789abcdef",
               DISCO_LOG_LEVEL="warning")
    n0 = await start("n0", env, tmp_path)
    n1 = await start("n1", env, tmp_path)
    try:
        alice_t, bob_t = await register(n0, "alice"), await register(n0, "bob")
        room = f"group:{await make_group(n0, alice_t, bob_t)}"
        alice = await connect(f"ws://127.0.0.1:{n0.port}/ws", alice_t)
        bob = await connect(f"ws://127.0.0.1:{n1.port}/ws", bob_t)
        await alice.request({"type": "join", "room": room}, "joined")
        await bob.request({"type": "join", "room": room}, "joined")  # relayed to n0

        n0.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        told = await alice.expect("reconnect", timeout_s=DRAINED_WITHIN_S)
        assert told["reason"] == "draining"
        left = await bob.expect("left", timeout_s=DRAINED_WITHIN_S, room=room)
        assert left["reason"] == "host_lost"
        assert time.monotonic() - sent < DRAINED_WITHIN_S  # no wait for the heartbeat expiry
        assert await asyncio.wait_for(n0.proc.wait(), 15) == 0

        rejoined = await bob.request({"type": "join", "room": room}, "joined")
        assert rejoined["participants"] == []
        alice = await connect(f"ws://127.0.0.1:{n1.port}/ws", alice_t)
        again = await alice.request({"type": "join", "room": room}, "joined")
        assert [p["display_name"] for p in again["participants"]] == ["bob"]
        for ws in (alice, bob):
            await ws.close()
    finally:
        for node in (n0, n1):
            if node.proc.returncode is None:
                node.proc.kill()
                await node.proc.wait()
    assert n0.proc.stderr is not None
    assert b"draining" in await n0.proc.stderr.read()
