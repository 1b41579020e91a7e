"""Fuzz the edge: generated WebSocket messages and REST bodies against a real server.

A seeded generator (``DISCO_FUZZ_SEED`` picks another run; a failure prints
the seed and the offending input) builds messages of every client type with
fields drawn from valid values and from hostile ones: unhashable and
deeply nested values, integers past every range, ``NaN``/``Infinity``,
non-ASCII digits, lone surrogates, overlong strings, truncated and
non-object JSON, binary frames. It sends them, in batches, from a member
with a group and from a guest, to an in-process uvicorn server, and sends
REST bodies and path ids to the group, location, place, sharing, SOS,
device, billing and guest routes.

Every reply must be an ordinary answer or error, never ``internal`` (HTTP:
never 5xx), nothing may log a traceback or an error, and each connection
must still answer ``ping`` at the end of every batch.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from common.settings import Settings
from protocol.wire import CLIENT_TYPES
from tests.server_helpers import LiveServer, WsClient, auth, live_server

SEED = int(os.environ.get("DISCO_FUZZ_SEED", "20261201"))
WS_MESSAGES = 10_000
REST_BODIES = 400  # REST is ~10x slower per request here (an SOS fans out to every group)
BATCH = 100  # messages per batch, then a ping; well under the server's 512-message outbox

HUGE_DIGITS = "9" * 40
WEIRD_SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 7, 2**31 - 1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64,
    10**30, -10**30, int(HUGE_DIGITS), 1e308, -1e308, 5e-324, 0.5, -0.0, 12.5, 90.0001,
    "", " ", "x" * 70, "y" * 3_000, "\u00b2", "\u0663", "\u0000", "\ud800", "\U0001f600",
    "group:1", "group:\u00b2", "group:" + HUGE_DIGITS, "group:-1", "group:0", "nearby",
    "p_000000000000", "../../etc/passwd", "NaN", "1e999", "<script>", "\r\n",
]
WEIRD_RAW = [  # JSON texts json.dumps would never produce
    "NaN", "Infinity", "-Infinity", "1e999", HUGE_DIGITS * 120, "[" * 3_000 + "]" * 3_000,
    "{" * 50, '"unterminated',
]
FRAMES_RAW = [
    "", " ", "null", "[]", "42", '"ping"', "{", '{"type": "ping"', '{"type": "ping"}}',
    '{"type": "ping", "id": ' + "9" * 4_400 + "}",
    '{"type": ' + "[" * 2_000 + "]" * 2_000 + "}",
    '{"type": "ping", "x": ' + "[" * 5_000 + "]" * 5_000 + "}",
    '{"type": "location", "lat": NaN, "lon": Infinity, "accuracy_m": -Infinity}',
    '{"type": "join", "room": "group:\\u00b2"}',
    '{"type": "join", "room": "group:' + "9" * 25 + '"}',
    '{"type": "chat", "room": "nearby", "text": "\\ud800"}',
    '{"type": "ping", "type": "join"}',
    "\ufeff{\"type\": \"ping\"}",
]
MINIMAL_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class Generator:
    """Deterministic hostile inputs from one seed."""

    def __init__(self, seed: int, group_id: int) -> None:
        self.rng = random.Random(seed)
        self.group_id = group_id

    def pick(self, options: list[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def weird(self, depth: int = 0) -> Any:
        roll = self.rng.random()
        if roll < 0.7 or depth > 3:
            return self.pick(WEIRD_SCALARS)
        if roll < 0.8:
            return [self.weird(depth + 1) for _ in range(self.rng.randrange(4))]
        if roll < 0.9:
            return {self.pick(["type", "id", "a", "lat", ""]): self.weird(depth + 1)
                    for _ in range(self.rng.randrange(3))}
        nested: Any = self.pick(WEIRD_SCALARS)
        for _ in range(self.rng.randrange(50, 400)):
            nested = [nested] if self.rng.random() < 0.5 else {"k": nested}
        return nested

    def room(self) -> Any:
        return self.pick(["nearby", f"group:{self.group_id}", "group:1", f"group:{2**31}",
                          "group:\u00b2", "pool:1", self.weird()])

    def valid(self, kind: str) -> dict[str, Any]:
        """Plausible fields for ``kind`` (each then kept, mutated or dropped)."""
        r = self.rng
        lat, lon = r.uniform(-90, 90), r.uniform(-180, 180)
        fields: dict[str, dict[str, Any]] = {
            "join": {"room": self.room(), "radius_m": r.choice([None, 100, 500, 2000, 50])},
            "leave": {"room": self.room()},
            "ping": {},
            "offer": {"room": self.room(), "sdp": r.choice([MINIMAL_SDP, "v=0", "garbage\r\n",
                                                            MINIMAL_SDP + "m=audio 9 x\r\n"]),
                      "music_mids": r.choice([[], ["0"], ["1", "2", "3", "4", "5"]])},
            "candidate": {"room": self.room(), "candidate": r.choice([
                None, {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                       "sdpMid": "0", "sdpMLineIndex": 0},
                {"candidate": "garbage"}])},
            "mute": {"muted": r.choice([True, False]), "room": self.room()},
            "volume": {"participant_id": "p_" + "0" * 12, "gain": r.uniform(-1, 3)},
            "music": {"action": r.choice(["play", "queue", "pause", "resume", "skip", "stop",
                                          "dance"]),
                      "source": r.choice(["song.ogg", "../x", None, "up-1"]),
                      "room": self.room()},
            "location": {"lat": lat, "lon": lon, "accuracy_m": r.uniform(0, 200),
                         "ts": r.choice([None, time.time(), 0, 4e9]),
                         "speed_mps": r.uniform(-1, 50), "heading_deg": r.uniform(0, 400),
                         "battery_pct": r.randrange(-5, 105)},
            "radius": {"radius_m": r.uniform(50, 2500)},
            "chat": {"room": self.room(), "text": r.choice(["hi", "", "z" * 600, "\u0007"])},
            "sos": {"message": r.choice([None, "help", "h" * 300])},
            "display_name": {"display_name": r.choice(["Nomad", "", "n" * 80, "\u202e"])},
        }
        return dict(fields.get(kind, {}))

    def message(self) -> str | bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.03:
            return self.pick(FRAMES_RAW)
        if roll < 0.04:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 40)))
        kind: Any = self.pick(sorted(CLIENT_TYPES)) if roll < 0.9 else self.weird()
        body = self.valid(kind) if isinstance(kind, str) else {}
        for key in list(body):
            mutation = r.random()
            if mutation < 0.15:
                body[key] = self.weird()
            elif mutation < 0.2:
                del body[key]
        if r.random() < 0.1:
            body[self.pick(["extra", "id", "type", "room", ""])] = self.weird()
        if r.random() < 0.5:
            body["id"] = self.pick([1, 2, "x", "r" * 64, "r" * 65, 2**53, 2**53 + 1, -5, 1.5,
                                    None, [], {}, True, int(HUGE_DIGITS)])
        message = {"type": kind, **body}
        text = json.dumps(message)
        if r.random() < 0.05:  # a value json.dumps never writes
            text = text[:-1] + f', "raw": {self.pick(WEIRD_RAW)}}}'
        return text

    def rest(self) -> tuple[str, str, dict[str, Any] | None, Any]:
        """(method, path, query, JSON body, or bytes for a raw body)."""
        r = self.rng
        gid: Any = self.pick([self.group_id, 1, 0, -1, 2**31, HUGE_DIGITS, "\u00b2", "abc",
                              "%00", "1.5"])
        body = self.weird() if r.random() < 0.4 else None
        choices: list[tuple[str, str, dict[str, Any] | None, Any]] = [
            ("POST", "/api/groups", None, {"name": self.pick(WEIRD_SCALARS)}),
            ("GET", f"/api/groups/{gid}", None, None),
            ("POST", "/api/locations", None, {**self.valid("location"),
                                              **({"lat": self.weird()} if body else {})}),
            ("GET", f"/api/groups/{gid}/locations", None, None),
            ("GET", f"/api/groups/{gid}/events",
             {"since": self.pick(["1e999", "nan", "-1", "x", HUGE_DIGITS]),
              "limit": self.pick(["0", "1", "999", HUGE_DIGITS, "-1", "\u00b2"])}, None),
            ("GET", f"/api/groups/{gid}/members/{self.pick([1, HUGE_DIGITS, 'x'])}/history",
             {"from": self.pick(["0", "nan", "inf", "1e999", HUGE_DIGITS]),
              "to": self.pick(["1", "-inf", "9e18", "x"])}, None),
            ("PUT", f"/api/groups/{gid}/sharing", None,
             {"paused": self.pick([True, "yes", None, 2]),
              "precision": self.pick(["precise", "approximate", "exact", 1])}),
            ("POST", f"/api/groups/{gid}/places", None,
             {"name": self.pick(WEIRD_SCALARS), "lat": self.pick(WEIRD_SCALARS),
              "lon": r.uniform(-180, 180), "radius_m": self.pick([25, 50_001, 1e308, "x"])}),
            ("DELETE", f"/api/groups/{gid}/places/{self.pick([1, HUGE_DIGITS, 'x'])}",
             None, None),
            ("PUT", f"/api/groups/{gid}/members/{self.pick([1, HUGE_DIGITS])}/role", None,
             {"role": self.pick(["owner", "admin", "god", None, []])}),
            ("POST", "/api/sos", None, body),
            ("POST", "/api/devices", None,
             {"platform": self.pick(["fcm", "apns", "webpush", "x"]),
              "token": self.pick(WEIRD_SCALARS)}),
            ("PUT", "/api/push/settings", None, body),
            ("POST", "/api/billing/webhook", None, body),
            ("POST", "/api/billing/checkout", None, {"plan": self.pick(WEIRD_SCALARS)}),
            ("POST", "/api/auth/guest", None, {"display_name": self.pick(WEIRD_SCALARS)}),
            ("POST", f"/api/invites/{self.pick(['x', HUGE_DIGITS, '%C2%B2'])}/accept",
             None, None),
        ]
        method, path, query, payload = self.pick(choices)
        if r.random() < 0.1:
            raw = self.pick([*WEIRD_RAW, "{", "[1,", '{"a": NaN}', '"\ud800"', "\ud800"])
            payload = raw.encode("utf-8", "surrogatepass")  # a body as sent, even invalid
        return method, path, query, payload


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(settings) as s:
        yield s


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()[:300]}" for r in caplog.records
            if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


async def fuzz_socket(client: WsClient, frames: Callable[[], str | bytes], count: int,
                      label: str) -> int:
    """Send ``count`` generated frames in batches; returns the replies seen."""
    replies = 0
    sent = 0
    while sent < count:
        batch = [frames() for _ in range(min(BATCH, count - sent))]
        for frame in batch:
            await client.ws.send(frame)
        sent += len(batch)
        marker = f"{label}-{sent}"
        await client.send({"type": "ping", "id": marker})
        while True:
            got = await client.recv(timeout_s=20.0)
            replies += 1
            assert not (got.get("type") == "error" and got.get("code") == "internal"), (
                f"seed {SEED}: internal error {got} in the batch {batch!r:.3000}")
            if got.get("type") == "pong" and got.get("id") == marker:
                break
    return replies


async def test_fuzzed_messages_and_bodies_get_answers_never_internal(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    start = time.monotonic()
    token, _ = await server.register("fuzzer")
    other, _ = await server.register("bystander")
    group = await server.group_with(token, other)
    guest_r = await server.http.post("/api/auth/guest", json={"display_name": "Guest"})
    guest_token = guest_r.json()["access_token"]
    generator = Generator(SEED, group)
    member, guest = await server.connect(token), await server.connect(guest_token)
    replies = 0
    for label, client in (("m", member), ("g", guest)):
        replies += await fuzz_socket(client, generator.message, WS_MESSAGES // 2, label)
    for client in (member, guest):
        pong = await client.request({"type": "ping", "id": "last"}, "pong")
        assert pong["id"] == "last"
    assert replies > WS_MESSAGES // 2, "most generated messages should get an answer"
    ws_seconds = time.monotonic() - start

    statuses: dict[int, int] = {}
    for _ in range(REST_BODIES):
        method, path, query, payload = generator.rest()
        kwargs: dict[str, Any] = {"headers": auth(token), "params": query}
        if isinstance(payload, bytes):
            kwargs["content"] = payload
            kwargs["headers"] = {**auth(token), "Content-Type": "application/json"}
        elif payload is not None:
            kwargs["content"] = json.dumps(payload)
            kwargs["headers"] = {**auth(token), "Content-Type": "application/json"}
        r = await server.http.request(method, path, **kwargs)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500 or r.status_code == 503, (
            f"seed {SEED}: {method} {path} {query} {payload!r:.500} -> {r.status_code} "
            f"{r.text[:300]}")
        if r.headers.get("content-type", "").startswith("application/json") and r.content:
            assert r.json().get("error") != "internal" if isinstance(r.json(), dict) else True
    assert sum(n for s, n in statuses.items() if s < 300) > 0, statuses
    pong = await member.request({"type": "ping", "id": "after-rest"}, "pong")
    assert pong["id"] == "after-rest"
    for client in (member, guest):
        await client.close()
    assert not no_tracebacks(caplog), f"seed {SEED}: {no_tracebacks(caplog)[:5]}"
    print(f"fuzz seed {SEED}: {WS_MESSAGES} ws messages in {ws_seconds:.1f} s, "
          f"{REST_BODIES} REST requests, statuses {dict(sorted(statuses.items()))}")
