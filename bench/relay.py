"""Benchmark: what the relay adds to a signaling round trip.

Not a test. Starts two `disco serve` nodes on one SQLite file and one Redis
(a prefix of its own, deleted afterwards). Two members of a group join its
room: one connected to the hosting node, one to the other node (relayed).
Each sends ``mute`` requests in turn and times request -> reply; the
difference between the two distributions is the relay's cost (two Redis
publishes and the hop between nodes).

    .venv/bin/python -m bench.relay [--requests 300] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_node(name: str, env: dict[str, str], cwd: str) -> tuple[
        asyncio.subprocess.Process, str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("disco")), "serve", "--port", str(port), cwd=cwd,
        env={**env, "DISCO_NODE_ID": name}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(base + "/healthz")).status_code == 200:
                    return proc, base
            await asyncio.sleep(0.2)
    raise SystemExit(f"node {name} did not start")


async def round_trips(ws: websockets.ClientConnection, room: str, n: int) -> list[float]:
    took = []
    for i in range(n):
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "mute", "room": room, "muted": i % 2 == 0,
                                  "id": i}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == i:
                break
        took.append((time.perf_counter() - t0) * 1000)
    return took


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def main(requests: int, redis_url: str) -> None:
    prefix = f"disco-bench-{secrets.token_hex(4)}:"
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
        env.update(DISCO_DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/disco.db",
                   DISCO_REDIS_URL=redis_url, DISCO_REDIS_PREFIX=prefix,
                   DISCO_JWT_SECRET=secrets.token_hex(32), DISCO_LOG_LEVEL="warning")
        host, host_url = await start_node("host", env, tmp)
        other, other_url = await start_node("other", env, tmp)
        try:
            async with httpx.AsyncClient(base_url=host_url, timeout=10) as http:
                tokens = []
                for name in ("ann", "bob"):
                    r = await http.post("/api/auth/register",
                                        json={"username": name, "password": PASSWORD})
                    tokens.append(r.json()["access_token"])
                h = {"Authorization": f"Bearer {tokens[0]}"}
                group = (await http.post("/api/groups", json={"name": "g"}, headers=h)).json()["id"]
                code = (await http.post(f"/api/groups/{group}/invites", headers=h)).json()["code"]
                await http.post(f"/api/invites/{code}/accept",
                                headers={"Authorization": f"Bearer {tokens[1]}"})
            room = f"group:{group}"
            local = await websockets.connect(
                f"{host_url.replace('http', 'ws')}/ws?token={tokens[0]}")
            relayed = await websockets.connect(
                f"{other_url.replace('http', 'ws')}/ws?token={tokens[1]}")
            for ws in (local, relayed):
                await ws.recv()  # welcome
                await ws.send(json.dumps({"type": "join", "room": room, "id": "j"}))
                while json.loads(await ws.recv()).get("id") != "j":
                    pass
            await round_trips(local, room, 20)  # warm up both paths
            await round_trips(relayed, room, 20)
            direct: list[float] = []
            via: list[float] = []
            for _ in range(requests // 50):
                direct += await round_trips(local, room, 50)
                via += await round_trips(relayed, room, 50)
            for name, values in (("direct (hosting node)", direct), ("relayed", via)):
                print(f"{name:22s} n={len(values)} p50 {pct(values, 50):.2f} ms  "
                      f"p99 {pct(values, 99):.2f} ms")
            print(f"relay adds: p50 {pct(via, 50) - pct(direct, 50):+.2f} ms, "
                  f"p99 {pct(via, 99) - pct(direct, 99):+.2f} ms")
            await local.close()
            await relayed.close()
        finally:
            for proc in (host, other):
                proc.terminate()
                await proc.wait()
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(redis_url)
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.redis))
