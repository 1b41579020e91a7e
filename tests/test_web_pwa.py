"""The web client as an installable app: manifest, icons, favicon, and a
service worker that opens the app shell with the server stopped."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path

import pytest

from common.settings import Settings
from tests.browser_helpers import Page, launch_chromium
from tests.server_helpers import live_server
from tests.services import require_binary


async def wait_registration(page: Page) -> str:
    """The service worker's registration id, from CDP's ServiceWorker events."""
    for _ in range(100):
        for event in page.cdp.events:
            if event["method"] == "ServiceWorker.workerRegistrationUpdated":
                for registration in event["params"]["registrations"]:
                    if not registration["isDeleted"]:
                        return str(registration["registrationId"])
        await asyncio.sleep(0.1)
    raise TimeoutError("no service worker registration reported")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_installable_and_opens_offline(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = require_binary("chromium", "chromium")
    shots = Path(os.environ.get("DISCO_WEB_SCREENSHOTS", tmp_path / "screens")) / "pwa"
    shots.mkdir(parents=True, exist_ok=True)
    async with launch_chromium(chromium, tmp_path) as browser:
        page = await browser.new_page(width=390, height=844, mobile=True)
        async with live_server(settings) as server:
            url = f"{server.base_url}/app/"
            # The manifest and every icon it names; the favicon.
            manifest_response = await server.http.get("/app/manifest.webmanifest")
            assert manifest_response.headers["content-type"].startswith("application/manifest+json")
            manifest = manifest_response.json()
            assert manifest["start_url"] == "/app/" and manifest["display"] == "standalone"
            for icon in manifest["icons"]:
                r = await server.http.get(f"/app/{icon['src']}")
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                w, h = png_size(r.content)
                assert icon["sizes"] == f"{w}x{h}"
            await page.goto(url)
            favicon = await page.evaluate("document.querySelector('link[rel=icon]').href")
            r = await server.http.get(favicon.removeprefix(server.base_url))
            assert r.status_code == 200 and png_size(r.content) == (32, 32)

            # The service worker installs and, after a reload, controls the page.
            scope = await page.wait_for(
                "navigator.serviceWorker.ready.then((r) => r.active && r.scope)", 15)
            assert scope == url
            await page.goto(url)
            await page.wait_for("navigator.serviceWorker.controller !== null")
            assert await page.evaluate("document.getElementById('offline').hidden")

            # A push (what groups/push/webpush.py sends, once decrypted) becomes a
            # notification through the service worker's push handler.
            await browser.cdp.send("Browser.grantPermissions", {
                "origin": server.base_url, "permissions": ["notifications"]})
            await page.send("ServiceWorker.enable")
            registration = await wait_registration(page)
            payload = {"title": "SOS from Bob", "body": "Bob needs help (Ridge riders)",
                       "tag": None, "data": {"category": "sos", "group_id": "1"}}
            await page.send("ServiceWorker.deliverPushMessage", {
                "origin": server.base_url, "registrationId": registration,
                "data": json.dumps(payload)})
            shown = await page.wait_for(
                "navigator.serviceWorker.ready.then((r) => r.getNotifications())"
                ".then((n) => n.length && n.map((x) => [x.title, x.body, x.data.category]))", 10)
            assert shown == [["SOS from Bob", "Bob needs help (Ridge riders)", "sos"]]

        # The server is gone: the page still opens, from the cache, and says it is offline.
        await page.goto(url)
        await page.wait_for("!document.getElementById('auth').hidden"
                            " && !document.getElementById('offline').hidden", 15)
        assert await page.evaluate("getComputedStyle(document.documentElement).backgroundColor") \
            == "rgb(16, 19, 26)"  # style.css came from the cache too
        path = await page.screenshot(shots / "offline.png")
        with capsys.disabled():
            print(f"\nscreenshot: {path}", flush=True)
