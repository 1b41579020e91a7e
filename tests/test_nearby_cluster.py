"""Nearby voice across three real `disco serve` nodes (PostgreSQL + Redis).

Guests connect straight to chosen nodes. A (node n0) and B (node n1) stand
100 m apart on either side of a partition line (two H3 res-5 cells, found
with h3); C (node n1) stands 20 m from A, on A's side; F (node n2) is 5 km
away. An FFT of what each real aiortc listener receives shows: A and C hear
each other (20 m, different nodes), A and B hear each other (across the
line, different nodes and partitions), B and C hear each other (same node),
and F hears nobody and is heard by nobody. Each guest's ``nearby`` list
names the others in range with a rounded distance, never coordinates.
A's chat reaches B and C (through their node) and not F. Then A walks 5 km
away: B and C stop hearing A on the same connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from groups.geo import destination, haversine_m
from groups.nearby.partition import partition_of
from signaling.nearby_mesh import GHOST_TTL_S
from tests.rtc_helpers import (
    RtcClient,
    describe_tones,
    eventually,
    has_tone,
    lacks_tone,
    loopback_ice,
)
from tests.server_helpers import WsClient
from tests.test_cluster_voice import Node, cluster, connect  # noqa: F401 (cluster: a fixture)
from tests.test_nearby import assert_no_coordinates
from tests.test_partition import across_a_line

TONES = {"a": 440.0, "b": 660.0, "c": 990.0, "f": 1_320.0}
HOME = {"a": "n0", "b": "n1", "c": "n1", "f": "n2"}
RADIUS_M = 500.0
LISTEN_S = 1.0
HEARS = {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}, "f": set()}
CHAMONIX = (45.8326, 6.8652)


def positions() -> dict[str, tuple[float, float]]:
    a, b = across_a_line(*CHAMONIX, 100.0)
    bearing_in = _bearing(b, a)  # from the line into A's partition
    c = destination(*a, bearing_in, 20.0)
    f = destination(*a, bearing_in, 5_000.0)
    return {"a": a, "b": b, "c": c, "f": f}


def _bearing(p: tuple[float, float], q: tuple[float, float]) -> float:
    import math

    dlon = math.radians(q[1] - p[1])
    y = math.sin(dlon) * math.cos(math.radians(q[0]))
    x = (math.cos(math.radians(p[0])) * math.sin(math.radians(q[0]))
         - math.sin(math.radians(p[0])) * math.cos(math.radians(q[0])) * math.cos(dlon))
    return math.degrees(math.atan2(y, x))


async def guest(node: Node, name: str) -> WsClient:
    async with httpx.AsyncClient(base_url=node.base, timeout=10) as http:
        r = await http.post("/api/auth/guest", json={"display_name": name.upper()})
        assert r.status_code == 201, r.text
        token = str(r.json()["access_token"])
    return await connect(f"ws://127.0.0.1:{node.port}/ws", token)


async def test_strangers_hear_each_other_across_nodes_and_a_partition_line(
    cluster: list[Node], monkeypatch: pytest.MonkeyPatch  # noqa: F811 (the fixture)
) -> None:
    loopback_ice(monkeypatch)
    where = positions()
    assert haversine_m(*where["a"], *where["b"]) == pytest.approx(100.0, abs=1.0)
    assert haversine_m(*where["a"], *where["c"]) == pytest.approx(20.0, abs=0.5)
    assert haversine_m(*where["a"], *where["f"]) == pytest.approx(5_000.0, abs=5.0)
    # A and B are in different partitions, each announced by a different node;
    # C shares A's partition but not A's node.
    assert partition_of(*where["a"]) != partition_of(*where["b"])
    assert partition_of(*where["c"]) == partition_of(*where["a"])
    nodes = {n.name: n for n in cluster}
    sockets = {name: await guest(nodes[HOME[name]], name) for name in TONES}
    assert {name: ws.welcome["node"] for name, ws in sockets.items()} == HOME
    peers: dict[str, RtcClient] = {}
    try:
        for name, ws in sockets.items():
            await ws.request({"type": "join", "room": "nearby", "radius_m": RADIUS_M}, "joined")
            lat, lon = where[name]
            await ws.request({"type": "location", "id": "fix", "lat": lat, "lon": lon,
                              "accuracy_m": 5.0}, "location_ok")
        for name, ws in sockets.items():
            client = RtcClient(name, TONES[name])
            answer = await ws.request(
                {"type": "offer", "room": "nearby", "sdp": await client.offer()}, "answer")
            await client.accept(answer["sdp"])
            await client.wait_connected()
            peers[name] = client

        def heard_right(name: str) -> bool:
            samples = peers[name].recorder.last(LISTEN_S)
            return all(has_tone(samples, TONES[o]) == (o in HEARS[name])
                       for o in TONES if o != name)

        for name in TONES:
            await peers[name].recorder.wait_frames(50)
            await eventually(lambda n=name: heard_right(n), 15.0,  # type: ignore[misc]
                             f"{name} hears exactly {sorted(HEARS[name])}")
        await asyncio.sleep(LISTEN_S)
        for name, client in peers.items():
            samples = client.recorder.last(LISTEN_S)
            for other in TONES:
                if other == name:
                    assert lacks_tone(samples, TONES[name]), f"{name} hears itself"
                elif other in HEARS[name]:
                    assert has_tone(samples, TONES[other]), (
                        f"{name} should hear {other}: " + describe_tones(samples, [TONES[other]]))
                else:
                    assert lacks_tone(samples, TONES[other]), (
                        f"{name} should not hear {other}: "
                        + describe_tones(samples, [TONES[other]]))

        # Node n1 (B and C) mirrors A as a ghost, pipes to n0 and is piped to: /metrics.
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(nodes["n1"].base + "/metrics")).text
        metrics = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                   if line.startswith("disco_nearby_")}
        # A and F: every guest of a partition n1 listens to is mirrored (F is in A's
        # partition, just out of everyone's range)
        assert metrics["disco_nearby_ghosts"] == 2.0
        assert metrics["disco_nearby_piped_frames_out_total"] > 0
        assert metrics["disco_nearby_piped_frames_in_total"] > 0

        # Each sees the others in range by display name and rounded distance only.
        async def listing(name: str) -> set[tuple[str, str]]:
            while True:
                seen = await sockets[name].expect("nearby", timeout_s=10)
                people = {(p["display_name"], p["distance"]) for p in seen["people"]}
                if {n for n, _ in people} == {o.upper() for o in HEARS[name]}:
                    return people

        assert await listing("a") == {("B", "~100 m"), ("C", "~50 m")}

        async def pid_of(name: str) -> str:
            """The participant id of ``name`` as the others are told it (``nearby`` lists)."""
            for frame in sockets["a"].raw:
                message = json.loads(frame)
                for p in message.get("people", ()) if message.get("type") == "nearby" else ():
                    if p["display_name"] == name.upper():
                        return str(p["participant_id"])
            raise AssertionError(f"no {name} in A's lists")

        # A turns B (on another node) down to nothing: A's mix only; B still hears A.
        await sockets["a"].request({"type": "volume", "participant_id": await pid_of("b"),
                                    "gain": 0.0}, "volume")
        await eventually(lambda: lacks_tone(peers["a"].recorder.last(0.5), TONES["b"]), 5.0,
                         "A no longer hears B at volume 0")
        await eventually(lambda: has_tone(peers["b"].recorder.last(0.5), TONES["a"]), 5.0,
                         "B still hears A")
        await eventually(lambda: has_tone(peers["a"].recorder.last(0.5), TONES["c"]), 5.0,
                         "A still hears C")

        # A's chat reaches B and C through their node, and nobody else.
        sent_chat = await sockets["a"].request(
            {"type": "chat", "room": "nearby", "text": "over here"}, "chat_sent")
        assert sent_chat["recipients"] == 2
        for name in ("b", "c"):
            got = await sockets[name].expect("chat", timeout_s=5)
            assert (got["display_name"], got["text"]) == ("A", "over here")
        await sockets["f"].request({"type": "ping", "id": "p"}, "pong")
        assert not [json.loads(f) for f in sockets["f"].raw
                    if json.loads(f).get("type") == "chat"]

        # A walks 5 km away: B and C (on the other node) stop hearing A, same connections.
        pcs = {name: id(client.pc) for name, client in peers.items()}
        far = destination(*where["a"], _bearing(where["b"], where["a"]), 5_000.0)
        await sockets["a"].request({"type": "location", "id": "fix2", "lat": far[0],
                                    "lon": far[1], "accuracy_m": 5.0}, "location_ok")
        for name in ("b", "c"):
            await eventually(
                lambda n=name: lacks_tone(peers[n].recorder.last(0.5), TONES["a"]),  # type: ignore[misc]
                10.0, f"{name} no longer hears A")
        assert {name: id(client.pc) for name, client in peers.items()} == pcs
        sent = [c for point in (*where.values(), far) for c in point]
        for ws in sockets.values():
            assert_no_coordinates(ws, sent)

        # A comes back, then A's node dies without a word: B and C stop hearing A, and
        # A leaves their lists once its ghost expires (nobody announces it any more).
        lat, lon = where["a"]
        await sockets["a"].request({"type": "location", "id": "fix3", "lat": lat, "lon": lon,
                                    "accuracy_m": 5.0}, "location_ok")
        for name in ("b", "c"):
            await eventually(
                lambda n=name: has_tone(peers[n].recorder.last(0.5), TONES["a"]),  # type: ignore[misc]
                10.0, f"{name} hears A again")
        for name in ("b", "c"):  # their lists name A again (older lists are read past)
            while "A" not in {p["display_name"] for p in (
                    await sockets[name].expect("nearby", timeout_s=10))["people"]}:
                pass
        nodes["n0"].proc.kill()
        await nodes["n0"].proc.wait()
        for name in ("b", "c"):
            await eventually(
                lambda n=name: lacks_tone(peers[n].recorder.last(0.5), TONES["a"]),  # type: ignore[misc]
                5.0, f"{name} no longer hears A once A's node is gone")
            while True:
                seen = await sockets[name].expect("nearby", timeout_s=GHOST_TTL_S + 5.0)
                if "A" not in {p["display_name"] for p in seen["people"]}:
                    break
    finally:
        for client in peers.values():
            await client.close()
        for ws in sockets.values():
            with contextlib.suppress(Exception):
                await ws.close()
