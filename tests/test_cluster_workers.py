"""``disco serve --workers N``: N nodes behind one port on one machine.

Every worker accepts on the one socket and is a node of its own; members whose
sockets land on different workers are in one call (relayed), a killed worker
is replaced, and SIGTERM stops them all. More than one worker without Redis
is refused with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.server_helpers import PASSWORD, WsClient
from tests.test_cluster_voice import DISCO, connect, free_port

START_TIMEOUT_S = 120.0  # a cold numba cache compiles the nearby kernels in every node


def env_without_disco() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}


def test_more_than_one_worker_or_a_media_node_needs_redis(tmp_path: Path) -> None:
    env = {**env_without_disco(), "DISCO_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/d.db"}
    done = subprocess.run([DISCO, "serve", "--workers", "2", "--port", str(free_port())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "DISCO_REDIS_URL" in done.stderr
    bad = subprocess.run([DISCO, "serve", "--workers", "0"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--workers must be 1 or more" in bad.stderr
    for command, says in ((["serve", "--media-workers", "1"], "DISCO_REDIS_URL"),
                          (["serve", "--media-workers", "-1"], "must be 0 or more"),
                          (["media"], "DISCO_REDIS_URL")):
        done = subprocess.run([DISCO, *command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and says in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr and "VAPID" not in done.stderr


async def node_ids(base: str, tries: int) -> set[str]:
    seen: set[str] = set()
    for _ in range(tries):  # a fresh connection each time: the kernel picks a worker
        async with httpx.AsyncClient(timeout=2) as http:
            with contextlib.suppress(httpx.HTTPError):
                seen.add((await http.get(base + "/healthz")).json()["node"])
        if len(seen) >= 2:
            break
    return seen


async def land_on_another_node(ws_url: str, token: str, not_on: str) -> WsClient:
    for _ in range(60):
        ws = await connect(ws_url, token)
        if ws.welcome["node"] != not_on:
            return ws
        await ws.close()
    raise AssertionError(f"every connection landed on {not_on}")


async def test_workers_are_nodes_of_one_deployment(postgres_url: str, redis_url: str,
                                                   redis_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**env_without_disco(), "DISCO_DATABASE_URL": postgres_url,
           "DISCO_REDIS_URL": redis_url, "DISCO_REDIS_PREFIX": redis_prefix,
           "DISCO_JWT_SECRET": "workers-test-0123456789abcdef", "DISCO_NODE_ID": "box",
           "DISCO_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        DISCO, "serve", "--workers", "2", "--port", str(port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(seen := await node_ids(base, 20)) < 2:
            assert proc.returncode is None, "disco serve --workers 2 exited"
            assert time.monotonic() < deadline, f"only {seen} answered"
            await asyncio.sleep(0.3)
        assert all(n.startswith("box-") for n in seen)

        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            tokens = []
            for name in ("ann", "bob"):
                r = await http.post("/api/auth/register",
                                    json={"username": name, "password": PASSWORD})
                assert r.status_code == 201, r.text
                tokens.append(r.json()["access_token"])
            h = {"Authorization": f"Bearer {tokens[0]}"}
            group = (await http.post("/api/groups", json={"name": "g"}, headers=h)).json()["id"]
            code = (await http.post(f"/api/groups/{group}/invites", headers=h)).json()["code"]
            r = await http.post(f"/api/invites/{code}/accept",
                                headers={"Authorization": f"Bearer {tokens[1]}"})
            assert r.status_code == 200, r.text
        room = f"group:{group}"
        ann = await connect(ws_url, tokens[0])
        bob = await land_on_another_node(ws_url, tokens[1], not_on=ann.welcome["node"])
        await ann.request({"type": "join", "room": room}, "joined")
        joined = await bob.request({"type": "join", "room": room}, "joined")
        assert [p["display_name"] for p in joined["participants"]] == ["ann"]
        await bob.request({"type": "chat", "room": room, "text": "other worker"}, "chat_sent")
        assert (await ann.expect("chat"))["text"] == "other worker"

        # A worker killed with -9 is replaced by a new node.
        victim = int(str(ann.welcome["node"]).rsplit("-", 1)[1])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            seen = await node_ids(base, 30)
            if len(seen) == 2 and ann.welcome["node"] not in seen:
                break
            assert time.monotonic() < deadline, f"no replacement worker: {seen}"
            await asyncio.sleep(0.5)
        for ws in (ann, bob):
            with contextlib.suppress(Exception):
                await ws.close()

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 40) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "started 2 workers" in log and log.count("draining") >= 2, log[-3000:]
        for pid in [int(n.rsplit("-", 1)[1]) for n in seen]:
            with pytest.raises(ProcessLookupError):  # no worker left behind
                os.kill(pid, 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
