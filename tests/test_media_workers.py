"""``disco serve --workers 1 --media-workers 1``: a call heard through a media worker.

Real processes on PostgreSQL and Redis, real aiortc peers with distinct tones.
The members' WebSockets reach the one whole worker; their group room is
placed on the media worker (its claim in Redis names it), whose SDP answers
the whole worker relays, and an FFT of each member's mix shows the others'
tones and never their own. Then the media worker is killed with -9: the
members are told (``host_lost``), the supervisor starts another, and they
are back in one call that they hear, within ``BACK_WITHIN_S``. The media
worker's Prometheus ``/metrics`` (``DISCO_MEDIA_METRICS_PORT``) counts the
packets it sent. SIGTERM stops every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.rtc_helpers import RtcClient, loopback_ice
from tests.server_helpers import WsClient
from tests.services import DISCO, free_tcp_port
from tests.test_cluster_voice import (
    TONES_HZ,
    connect,
    connect_media,
    hear_each_other,
    join_until_joined,
)
from tests.test_cluster_workers import START_TIMEOUT_S, env_without_disco

BACK_WITHIN_S = 15.0
"""Heartbeat expiry (5 s) + a new media worker's start (aiortc's import) + the join."""


async def room_holder(redis_url: str, prefix: str, room: str) -> str | None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.get(f"{prefix}room:{room}")
    finally:
        await client.aclose()
    return raw.decode() if raw is not None else None


async def metric(port: int, name: str) -> float:
    """One unlabelled sample from a media worker's Prometheus ``/metrics``."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    values = [float(line.split()[1]) for line in text.splitlines()
              if line.startswith(name + " ")]
    assert values, f"no {name} in /metrics"
    return values[0]


async def test_a_call_through_a_media_worker_survives_it(
    postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loopback_ice(monkeypatch)
    port, metrics_port = free_tcp_port(), free_tcp_port()
    env = {**env_without_disco(), "DISCO_DATABASE_URL": postgres_url,
           "DISCO_REDIS_URL": redis_url, "DISCO_REDIS_PREFIX": redis_prefix,
           "DISCO_JWT_SECRET": "media-workers-test-0123456789abcdef", "DISCO_NODE_ID": "box",
           "DISCO_RTC_HOST_ADDRESSES": "127.0.0.1", "DISCO_LOG_LEVEL": "warning",
           "DISCO_MEDIA_METRICS_PORT": str(metrics_port)}
    proc = await asyncio.create_subprocess_exec(
        DISCO, "serve", "--workers", "1", "--media-workers", "1", "--port", str(port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    sockets: dict[str, WsClient] = {}
    peers: dict[str, RtcClient] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                assert proc.returncode is None, "disco serve --media-workers 1 exited"
                assert time.monotonic() < deadline, "the whole worker did not start"
                await asyncio.sleep(0.3)
            tokens = {}
            for name in TONES_HZ:
                r = await http.post("/api/auth/register",
                                    json={"username": name, "password": "correct horse 42"})
                assert r.status_code == 201, r.text
                tokens[name] = r.json()["access_token"]
            h = {"Authorization": f"Bearer {tokens['alice']}"}
            group = (await http.post("/api/groups", json={"name": "g"}, headers=h)).json()["id"]
            for name in ("bob", "carol"):
                code = (await http.post(f"/api/groups/{group}/invites", headers=h)).json()["code"]
                r = await http.post(f"/api/invites/{code}/accept",
                                    headers={"Authorization": f"Bearer {tokens[name]}"})
                assert r.status_code == 200, r.text
        room = f"group:{group}"
        ws = {name: await connect(ws_url, tokens[name]) for name in TONES_HZ}
        sockets.update(ws)
        for name in TONES_HZ:  # the media worker may still be starting: try again until
            await join_until_joined(ws[name], room, time.monotonic() + START_TIMEOUT_S)
        holder = await room_holder(redis_url, redis_prefix, room)
        assert holder is not None and holder.startswith("box-media-"), holder
        assert all(w.welcome["node"] != holder for w in ws.values())  # relayed, not local
        for name in TONES_HZ:
            peers[name] = await connect_media(ws[name], room, name)
        await hear_each_other(peers)
        sent = await metric(metrics_port, "disco_sfu_packets_out_total")
        assert sent >= 3 * 50, f"the media worker's /metrics counts {sent} packets sent"

        # The media worker dies without a word; the supervisor starts another.
        os.kill(int(holder.rsplit("-", 1)[1]), signal.SIGKILL)
        killed = time.monotonic()
        for client in peers.values():
            await client.close()
        peers.clear()

        async def back(name: str) -> None:
            left = await ws[name].expect("left", timeout_s=BACK_WITHIN_S, room=room)
            assert left["reason"] == "host_lost"
            await join_until_joined(ws[name], room, killed + BACK_WITHIN_S)
            peers[name] = await connect_media(ws[name], room, name)

        await asyncio.gather(*(back(name) for name in TONES_HZ))
        took = time.monotonic() - killed
        assert took <= BACK_WITHIN_S, f"back in one call after {took:.1f} s"
        print(f"back in one call {took:.1f} s after the media worker's kill "
              f"(on {await room_holder(redis_url, redis_prefix, room)})")
        await hear_each_other(peers)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 40) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "started 1 workers and 1 media workers" in log, log[-3000:]
        assert log.count("is ready") >= 3, log[-3000:]  # whole, media, and the new media
    finally:
        for client in peers.values():
            await client.close()
        for w in sockets.values():
            with contextlib.suppress(Exception):
                await w.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
