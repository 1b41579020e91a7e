"""One call across three real `disco serve` nodes (PostgreSQL + Redis), through the relay.

Three members of a group connect their WebSockets through HAProxy (round-robin,
no stickiness), so each reaches a different node.
The room is placed on one node; the other two relay the room's messages to it,
so the SDP answers come from the hosting node and the media goes straight
there. An FFT of what each member hears shows the other two tones and never
its own; mute works across nodes. Then the hosting node is killed with -9:
the members are back in one whole call on another node within 10 s. Last, a
node that only relays is killed with -9: the hosting node drops its members
from the call once its heartbeat has lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.rtc_helpers import (
    RtcClient,
    assert_mix_minus,
    describe_tones,
    lacks_tone,
    loopback_ice,
)
from tests.server_helpers import PASSWORD, WsClient
from tests.services import DISCO, missing, stop_process
from tests.services import free_tcp_port as free_port

TONES_HZ = {"alice": 440.0, "bob": 660.0, "carol": 990.0}
LISTEN_S = 1.0
BACK_WITHIN_S = 10.0
START_TIMEOUT_S = 120.0  # a cold numba cache compiles the nearby kernels in every node




class Node:
    def __init__(self, name: str, port: int, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"


async def connect(ws_url: str, token: str) -> WsClient:
    import websockets

    ws = await websockets.connect(f"{ws_url}?token={token}", max_size=4 * 1024 * 1024)
    client = WsClient(ws)
    client.welcome = await client.expect("welcome")
    return client


@pytest.fixture
async def cluster(postgres_url: str, redis_url: str, redis_prefix: str,
                  tmp_path: Path) -> AsyncIterator[list[Node]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env.update(DISCO_DATABASE_URL=postgres_url, DISCO_REDIS_URL=redis_url,
               DISCO_REDIS_PREFIX=redis_prefix, DISCO_JWT_SECRET="cluster-voice-0123456789abcdef",
               DISCO_RTC_HOST_ADDRESSES="127.0.0.1", DISCO_LOG_LEVEL="warning")
    nodes: list[Node] = []
    for n in range(3):
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            DISCO, "serve", "--port", str(port), cwd=tmp_path,
            env={**env, "DISCO_NODE_ID": f"n{n}", "DISCO_NODE_URL": f"ws://127.0.0.1:{port}"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        nodes.append(Node(f"n{n}", port, proc))
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + START_TIMEOUT_S
            for node in nodes:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(node.base + "/healthz")).status_code == 200:
                            break
                    assert node.proc.returncode is None, f"{node.name} exited"
                    assert time.monotonic() < deadline, f"{node.name} did not start"
                    await asyncio.sleep(0.2)
        yield nodes
    finally:
        for node in nodes:
            await stop_process(node.proc)


@pytest.fixture
async def balancer(cluster: list[Node], tmp_path: Path) -> AsyncIterator[str]:
    """HAProxy in front of the nodes: WebSockets spread round-robin, no stickiness."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if binary is None:
        missing("haproxy (Debian package haproxy)")
    assert binary is not None
    port = free_port()
    servers = "\n".join(f"  server {n.name} 127.0.0.1:{n.port} check inter 300 fall 1 rise 1"
                         for n in cluster)
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  retries 3
  option redispatch
frontend disco
  bind 127.0.0.1:{port}
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /healthz
{servers}
""")
    proc = await asyncio.create_subprocess_exec(
        binary, "-db", "-f", str(config), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                assert proc.returncode is None and time.monotonic() < deadline, "no haproxy"
                await asyncio.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await stop_process(proc)


async def register(node: Node, name: str) -> str:
    async with httpx.AsyncClient(base_url=node.base, timeout=10) as http:
        r = await http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return str(r.json()["access_token"])


async def make_group(node: Node, owner: str, *members: str) -> int:
    async with httpx.AsyncClient(base_url=node.base, timeout=10) as http:
        h = {"Authorization": f"Bearer {owner}"}
        group = int((await http.post("/api/groups", json={"name": "crew"}, headers=h)).json()["id"])
        for token in members:
            code = (await http.post(f"/api/groups/{group}/invites", headers=h)).json()["code"]
            r = await http.post(f"/api/invites/{code}/accept",
                                headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        return group


async def join_until_joined(ws: WsClient, room: str, deadline: float) -> dict[str, object]:
    """Join, trying again while the room is being placed anew (``moved``, ``elsewhere``)."""
    attempt = 0
    while True:
        attempt += 1
        rid = f"join-{attempt}"
        await ws.send({"type": "join", "room": room, "id": rid})
        got = await ws.expect_any({"joined", "error"}, timeout_s=5, id=rid)
        if got["type"] == "joined":
            return got
        assert time.monotonic() < deadline, f"still not joined: {got}"
        await asyncio.sleep(0.2)


async def connect_media(ws: WsClient, room: str, name: str) -> RtcClient:
    client = RtcClient(name, TONES_HZ[name])
    answer = await ws.request({"type": "offer", "room": room, "sdp": await client.offer()},
                              "answer")
    await client.accept(answer["sdp"])
    await client.wait_connected()
    return client


async def hear_each_other(peers: dict[str, RtcClient]) -> None:
    for client in peers.values():
        await client.recorder.wait_frames(50)
    await asyncio.sleep(LISTEN_S)
    assert_mix_minus(peers, TONES_HZ, LISTEN_S)


async def test_one_call_over_three_nodes_survives_its_node(
    cluster: list[Node], balancer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback_ice(monkeypatch)
    by_name = {n.name: n for n in cluster}
    tokens = {name: await register(cluster[0], name) for name in TONES_HZ}
    group = await make_group(cluster[0], tokens["alice"], tokens["bob"], tokens["carol"])
    room = f"group:{group}"
    # Through the load balancer, round-robin: each member on a different node.
    sockets = {name: await connect(balancer, tokens[name]) for name in TONES_HZ}
    home = {name: by_name[str(ws.welcome["node"])] for name, ws in sockets.items()}
    assert len({n.name for n in home.values()}) == 3, {k: n.name for k, n in home.items()}
    peers: dict[str, RtcClient] = {}
    try:
        # alice's node hosts the room; bob's and carol's nodes relay to it.
        listed: dict[str, set[str]] = {}
        for name in TONES_HZ:
            joined = await sockets[name].request({"type": "join", "room": room}, "joined")
            listed[name] = {str(p["display_name"]) for p in joined["participants"]}
        assert listed == {"alice": set(), "bob": {"alice"}, "carol": {"alice", "bob"}}
        for name in ("bob", "carol"):
            await sockets["alice"].expect("participant_joined", display_name=name)
        for name in TONES_HZ:
            peers[name] = await connect_media(sockets[name], room, name)
        await hear_each_other(peers)

        # Mute from carol's node (relayed): her tone leaves both other mixes.
        await sockets["carol"].request({"type": "mute", "room": room, "muted": True}, "muted")
        await sockets["alice"].expect("participant_muted", muted=True)
        await asyncio.sleep(0.3)
        await asyncio.sleep(LISTEN_S)
        for name in ("alice", "bob"):
            samples = peers[name].recorder.last(LISTEN_S)
            assert lacks_tone(samples, TONES_HZ["carol"]), describe_tones(samples, [990.0])
        await sockets["carol"].request({"type": "mute", "room": room, "muted": False}, "muted")

        # The hosting node dies without a word.
        host = home["alice"]
        host.proc.kill()
        await host.proc.wait()
        killed = time.monotonic()
        deadline = killed + BACK_WITHIN_S
        for client in peers.values():
            await client.close()
        peers.clear()
        with contextlib.suppress(Exception):
            await sockets["alice"].close()
        # Her app reconnects through the load balancer, which sends her to a live node.
        sockets["alice"] = await connect(balancer, tokens["alice"])
        home["alice"] = by_name[str(sockets["alice"].welcome["node"])]
        assert home["alice"] is not host

        async def back(name: str) -> None:
            if name != "alice":
                left = await sockets[name].expect("left", timeout_s=BACK_WITHIN_S, room=room)
                assert left["reason"] == "host_lost"
            await join_until_joined(sockets[name], room, deadline)
            peers[name] = await connect_media(sockets[name], room, name)

        await asyncio.gather(*(back(name) for name in TONES_HZ))
        took = time.monotonic() - killed
        assert took <= BACK_WITHIN_S, f"back in one call after {took:.1f} s"
        living = [n for n in cluster if n is not host]
        async with httpx.AsyncClient(timeout=5) as http:
            rooms = {n.name: (await http.get(n.base + "/healthz")).json()["rooms"]
                     for n in living}
        assert sorted(rooms.values()) == [0, 1]  # the room lives on one of the living nodes
        print(f"back in one call {took:.1f} s after the kill")
        await hear_each_other(peers)  # one whole call again, on a live node

        # Now the other living node (which relays its members) dies: the hosting
        # node drops their participants once that node's heartbeat has lapsed.
        new_host = next(n for n in living if rooms[n.name] == 1)
        other = next(n for n in living if n is not new_host)
        on_other = [name for name in TONES_HZ if home[name] is other]
        stays = [name for name in TONES_HZ if name not in on_other]
        assert on_other and stays
        other.proc.kill()
        await other.proc.wait()
        for name in stays:
            for _ in on_other:
                left = await sockets[name].expect("participant_left", timeout_s=BACK_WITHIN_S)
                assert left["room"] == room
        await asyncio.sleep(LISTEN_S)
        for name in stays:
            samples = peers[name].recorder.last(LISTEN_S)
            for gone in on_other:
                assert lacks_tone(samples, TONES_HZ[gone]), describe_tones(samples, [
                    TONES_HZ[gone]])
        assert new_host.proc.returncode is None
    finally:
        for client in peers.values():
            await client.close()
        for ws in sockets.values():
            with contextlib.suppress(Exception):
                await ws.close()
