"""A real Disco server for tests: uvicorn in-process on an ephemeral loopback port,
plus a small REST/WebSocket client that speaks the documented protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from common.settings import Settings
from signaling.app import create_app
from signaling.deps import AppState

PASSWORD = "correct horse battery"


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    app_state: AppState
    http: httpx.AsyncClient

    async def register(self, username: str) -> tuple[str, dict[str, Any]]:
        r = await self.http.post("/api/auth/register",
                                 json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        body = r.json()
        return body["access_token"], body["user"]

    async def group_with(self, owner_token: str, *member_tokens: str, name: str = "crew") -> int:
        """Create a group owned by the first token and invite the others into it."""
        r = await self.http.post("/api/groups", json={"name": name}, headers=auth(owner_token))
        assert r.status_code == 201, r.text
        group_id = int(r.json()["id"])
        for token in member_tokens:
            invite = await self.http.post(f"/api/groups/{group_id}/invites",
                                          headers=auth(owner_token))
            assert invite.status_code == 201, invite.text
            accepted = await self.http.post(f"/api/invites/{invite.json()['code']}/accept",
                                            headers=auth(token))
            assert accepted.status_code == 200, accepted.text
        return group_id

    async def connect(self, token: str) -> WsClient:
        ws = await websockets.connect(f"{self.ws_url}?token={token}", max_size=4 * 1024 * 1024)
        client = WsClient(ws)
        client.welcome = await client.expect("welcome")
        return client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class WsClient:
    ws: ClientConnection
    welcome: dict[str, Any] = field(default_factory=dict)
    backlog: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # every frame received, as sent on the wire
    requests: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout_s: float = 5.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s)))

    async def expect(self, kind: str, timeout_s: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next message of type ``kind`` (matching ``match``); others are kept."""
        return await self.expect_any({kind}, timeout_s, **match)

    async def expect_any(self, kinds: set[str], timeout_s: float = 5.0,
                         **match: Any) -> dict[str, Any]:
        """The first message (queued or new) whose type is in ``kinds``; others are kept."""
        for n, message in enumerate(self.backlog):
            if message.get("type") in kinds and all(message.get(k) == v for k, v in match.items()):
                return self.backlog.pop(n)
        kept: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError(f"no {kinds} {match} within {timeout_s}s; saw {kept}")
                frame = await asyncio.wait_for(self.ws.recv(), remaining)
                self.raw.append(str(frame))
                message = dict(json.loads(frame))
                if message.get("type") in kinds and all(
                    message.get(k) == v for k, v in match.items()
                ):
                    return message
                kept.append(message)
        finally:
            self.backlog.extend(kept)

    async def request(self, message: dict[str, Any], reply: str,
                      timeout_s: float = 10.0) -> dict[str, Any]:
        """Send and wait for its reply (matched by ``id``); an error reply raises."""
        if "id" not in message:
            self.requests += 1
            message = {**message, "id": f"req-{self.requests}"}
        await self.send(message)
        got = await self.expect_any({reply, "error"}, timeout_s, id=message["id"])
        if got["type"] == "error":
            raise AssertionError(f"error reply to {message.get('type')}: {got}")
        return got

    async def close(self) -> None:
        await self.ws.close()


class _InProcessServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C and `timeout` must still stop pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """Serve ``settings`` on 127.0.0.1 at a free port until the block ends."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio",
        ws_max_size=1024 * 1024, lifespan="on",
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield LiveServer(base, f"ws://127.0.0.1:{port}/ws", app.state.disco, http)
    finally:
        server.should_exit = True
        await task
