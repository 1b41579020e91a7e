"""`disco serve` as a user starts it: a real process, real port, dev defaults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from common.settings import DEV_JWT_SECRET
from groups.push.webpush import VapidKeys
from tests.services import DISCO
from tests.services import free_tcp_port as free_port


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest
           ) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    extra: dict[str, str] = getattr(request, "param", {})  # more environment
    proc = subprocess.Popen(
        [DISCO, "serve", "--port", str(port)], cwd=tmp_path, env={**clean_env(), **extra},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"disco serve exited: {proc.stdout.read() if proc.stdout else ''}")
    else:
        proc.kill()
        pytest.fail("disco serve did not answer /healthz within 30 s")
    yield base, proc
    proc.terminate()
    proc.wait(10)


def test_serve_on_embedded_defaults(served: tuple[str, subprocess.Popen[str]],
                                    tmp_path: Path) -> None:
    base, proc = served
    assert (tmp_path / "disco.db").exists()  # SQLite file in the working directory
    r = httpx.post(base + "/api/auth/register",
                   json={"username": "newuser", "password": "a decent passphrase"})
    assert r.status_code == 201
    token = r.json()["access_token"]
    g = httpx.post(base + "/api/groups", json={"name": "first"},
                   headers={"Authorization": f"Bearer {token}"})
    assert g.status_code == 201
    assert httpx.get(base + "/", follow_redirects=False).headers["location"] == "/app/"
    webpush = httpx.get(base + "/api/push/webpush", headers={"Authorization": f"Bearer {token}"})
    assert webpush.status_code == 200, webpush.text  # dev mode made a VAPID pair

    async def talk() -> dict[str, object]:
        async with websockets.connect(base.replace("http", "ws") + f"/ws?token={token}") as ws:
            # the client offered permessage-deflate; the server declines by default
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "room": f"group:{g.json()['id']}"}))
            return dict(json.loads(await asyncio.wait_for(ws.recv(), 5)))

    assert asyncio.run(talk())["type"] == "joined"
    proc.terminate()
    output, _ = proc.communicate(timeout=10)
    assert "DEV MODE" in output and DEV_JWT_SECRET in output  # dev keys printed plainly
    # The web client's address is printed once the server answers, not before the
    # nearby index is ready (the first start compiles it for a while).
    ready = output.index(f"Disco is ready: web client at {base}/app/")
    assert output.index("preparing the nearby index") < ready
    assert output.index("Uvicorn running on") < ready
    (vapid,) = [line.split("=", 1)[1] for line in output.splitlines()
                if line.strip().startswith("DISCO_VAPID_PRIVATE_KEY=")]
    assert VapidKeys.from_private(vapid).public_key == webpush.json()["public_key"]


@pytest.mark.parametrize("served", [{"DISCO_WS_COMPRESSION": "true"}], indirect=True)
def test_websocket_compression_is_a_setting(served: tuple[str, subprocess.Popen[str]]) -> None:
    base, _proc = served
    token = httpx.post(base + "/api/auth/register", json={
        "username": "squeezed", "password": "a decent passphrase"}).json()["access_token"]

    async def handshake() -> str:
        async with websockets.connect(base.replace("http", "ws") + f"/ws?token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            assert ws.response is not None
            return str(ws.response.headers.get("Sec-WebSocket-Extensions", ""))

    assert "permessage-deflate" in asyncio.run(handshake())


def test_prod_mode_refuses_placeholder_secrets(tmp_path: Path) -> None:
    result = subprocess.run(
        [DISCO, "serve", "--prod", "--port", str(free_port())], cwd=tmp_path, env=clean_env(),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "DISCO_JWT_SECRET" in result.stderr


def test_help_and_bad_arguments() -> None:
    helped = subprocess.run([DISCO, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--port" in helped.stdout and "--config" in helped.stdout
    bad = subprocess.run([DISCO, "serve", "--port", "http"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr


def test_a_bad_setting_is_refused_in_a_line_not_a_traceback(tmp_path: Path) -> None:
    for command in (["serve", "--port", str(free_port())], ["media"]):
        result = subprocess.run(
            [DISCO, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**clean_env(), "DISCO_RTC_POLLED_RECEIVE": "maybe"},
        )
        assert result.returncode != 0
        assert "refusing to start: bad settings" in result.stderr, result.stderr
        assert "DISCO_RTC_POLLED_RECEIVE" in result.stderr and "Traceback" not in result.stderr
