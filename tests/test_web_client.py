"""The web client in a real browser: headless Chromium against a live server.

Chromium loads /app/ from an in-process server (uvicorn on 127.0.0.1), and the
test drives the page as a user would (typing, clicking), through the Chrome
DevTools Protocol (tests/browser_helpers.py). A Python participant on the
other side of the room checks what the server saw: a WebSocket client for
signaling and an aiortc peer that sends a tone and measures what it hears.

Chromium's fake microphone (``--use-fake-device-for-media-stream``) beeps, so
audio flows both ways: browser -> server mixer -> Python peer, and Python
tone -> mixer -> browser. Positions come from CDP's geolocation override.
Everything stays on the loopback (see tests/browser_helpers.py).

Screenshots land in the test's tmp dir, or in DISCO_WEB_SCREENSHOTS=<dir>.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.settings import Settings
from tests.browser_helpers import Browser, Page, launch_chromium
from tests.rtc_helpers import Recorder, RtcClient, loopback_ice
from tests.server_helpers import LiveServer, auth, live_server
from tests.services import require_binary

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HEARD_PEAK_MIN = 1_000  # int16 peak that is clearly not silence
MEDIA_TIMEOUT_S = 20.0
HOME = (46.5580, 7.8350)  # where the browser says it is (lat, lon)
M_PER_DEG = 6_371_000 * math.pi / 180  # metres per degree of latitude

# Total audio energy the browser has played out from the server's track.
INBOUND_ENERGY_JS = """(async () => {
  if (!window.disco.pc) return 0;
  let energy = 0;
  (await window.disco.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") energy += r.totalAudioEnergy || 0;
  });
  return energy;
})()"""


async def loudest_heard(recorder: Recorder, timeout_s: float) -> int:
    """The peak a recorder hears, waiting up to ``timeout_s`` for more than silence."""
    peak = 0
    for _ in range(max(1, round(timeout_s / 0.5))):
        await recorder.wait_frames(25)  # 0.5 s of audio
        peak = max(peak, int(np.abs(recorder.last(0.5)).max()))
        if peak >= HEARD_PEAK_MIN:
            break
    return peak


@pytest.fixture
async def server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """A live server whose media offers only 127.0.0.1 as its ICE candidate."""
    loopback_ice(monkeypatch)  # for the Python peer in this process (and undone after)
    async with live_server(settings.model_copy(update={"rtc_host_addresses": [LOOPBACK]})) as s:
        yield s


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    chromium = require_binary("chromium", "chromium")
    async with launch_chromium(chromium, tmp_path) as b:
        yield b


def sent_frames(page: Page, kind: str) -> list[dict[str, Any]]:
    """WebSocket messages of type ``kind`` the page has sent so far (needs Network.enable)."""
    frames = []
    for event in page.cdp.events:
        if event["method"] == "Network.webSocketFrameSent":
            message = json.loads(event["params"]["response"]["payloadData"])
            if message.get("type") == kind:
                frames.append(message)
    return frames


async def eventually(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not true within {timeout_s}s"
        await asyncio.sleep(0.05)


async def wait_sent(page: Page, kind: str) -> list[dict[str, Any]]:
    """Wait until the page has sent a ``kind`` message; all of them so far."""
    await eventually(lambda: sent_frames(page, kind))
    return sent_frames(page, kind)


async def set_range(page: Page, selector: str, value: float) -> None:
    """Drag a slider to ``value``: input events while moving, change on release."""
    await page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)});"
        f" r.value = '{value}'; r.dispatchEvent(new Event('input'));"
        " r.dispatchEvent(new Event('change')); })()")


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where to keep a picture of the page (DISCO_WEB_SCREENSHOTS=<dir> to choose)."""
    folder = Path(os.environ.get("DISCO_WEB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    log.info("screenshot: %s", folder / name)
    return folder / name


async def test_register_create_group_invite_and_talk(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    page = await browser.new_page()
    await page.send("Network.enable")  # to read the page's WebSocket frames
    await page.goto(f"{server.base_url}/")
    assert (await page.evaluate("location.pathname")) == "/app/"  # "/" redirects here

    # Register through the form.
    await page.fill("#username", "alice")
    await page.fill("#password", "correct horse battery")
    await page.fill("#display-name", "Alice")
    await page.click("#register")
    me = await page.wait_for("window.disco.me")
    assert me["kind"] == "user" and me["display_name"] == "Alice"
    token = await page.evaluate("localStorage.getItem('disco.token')")
    assert token and (await server.http.get("/api/auth/me", headers=auth(token))).status_code == 200

    # Create a group, then an invite code that a second user accepts.
    await page.fill("#group-name", "Ridge riders")
    await page.click("#create-group")
    await page.wait_for("document.querySelector('#groups .talk')")
    group = await page.evaluate("window.disco.groups[0]")
    assert group["name"] == "Ridge riders" and group["role"] == "owner"
    room = group["room"]
    await page.click("#groups .invite-btn")
    code = await page.wait_for("document.getElementById('invite-code-out')?.textContent")
    bob_token, _ = await server.register("bob")
    accepted = await server.http.post(f"/api/invites/{code}/accept", headers=auth(bob_token))
    assert accepted.status_code == 200, accepted.text

    # Bob is in the room first; Alice clicks Talk: the server tells Bob, the page lists Bob.
    bob = await server.connect(bob_token)
    bob_joined = await bob.request({"type": "join", "room": room}, "joined")
    bob_pid = bob_joined["participant_id"]
    bob_row = f'[data-participant-id="{bob_pid}"]'  # Bob's row in the page's participant list
    tone = RtcClient("bob", tone_hz=440)
    try:
        await page.click("#groups .talk")
        arrival = await bob.expect("participant_joined", timeout_s=10)
        assert arrival["user_id"] == me["id"] and arrival["display_name"] == "Alice"
        await page.wait_for(f"document.querySelector('{bob_row}')")

        # Bob starts sending a tone only now: `speaking` events announce changes,
        # so one sent before Alice was in the room would never reach her.
        answer = await bob.request({"type": "offer", "room": room, "sdp": await tone.offer()},
                                   "answer")
        await tone.accept(answer["sdp"])

        # Voice: the browser's peer connection to the mixer connects on loopback,
        # the browser plays Bob's tone, Bob hears the browser's fake microphone.
        await page.wait_for("window.disco.pc?.connectionState === 'connected'", MEDIA_TIMEOUT_S)
        await page.wait_for(f"({INBOUND_ENERGY_JS}).then((e) => e > 0.001)", MEDIA_TIMEOUT_S)
        peak = await loudest_heard(tone.recorder, MEDIA_TIMEOUT_S)
        assert peak >= HEARD_PEAK_MIN, f"Bob never heard the browser's microphone (peak {peak})"
        candidates = [c["candidate"] for c in sent_frames(page, "candidate") if c["candidate"]]
        assert candidates and all(f" {LOOPBACK} " in c["candidate"] for c in candidates)

        # The speaking indicator lights up for Bob, who sends a steady tone.
        await page.wait_for(
            f"document.querySelector('{bob_row}').classList.contains('speaking')", MEDIA_TIMEOUT_S)

        # Mute reaches the others; a volume change is accepted by the server.
        await page.click("#mute")
        muted = await bob.expect("participant_muted", timeout_s=10)
        assert muted["muted"] is True and muted["participant_id"] == arrival["participant_id"]
        await page.evaluate(
            f"(() => {{ const s = document.querySelector('{bob_row} .volume');"
            " s.value = '0.5'; s.dispatchEvent(new Event('change')); })()")
        volume = await wait_sent(page, "volume")
        assert volume == [{"type": "volume", "participant_id": bob_pid, "gain": 0.5}]
        assert not await page.evaluate("!document.getElementById('error').hidden")

        # Location: the browser's position goes out as a `location` message, and a
        # member's position is drawn on the map with its distance.
        await browser.cdp.send("Browser.grantPermissions",
                               {"origin": server.base_url, "permissions": ["geolocation"]})
        await page.send("Emulation.setGeolocationOverride",
                        {"latitude": HOME[0], "longitude": HOME[1], "accuracy": 12})
        await page.click("#share-precise")
        (fix,) = await wait_sent(page, "location")
        assert (fix["lat"], fix["lon"], fix["accuracy_m"]) == (*HOME, 12)
        # Bob, a member, shares his position for real; the server records it and
        # publishes it to the group, and the page draws it.
        await bob.request({"type": "location", "lat": HOME[0] + 300 / M_PER_DEG,
                           "lon": HOME[1], "accuracy_m": 8}, "location_ok")
        row = await page.wait_for("document.querySelector('#positions li.position')?.textContent")
        assert row.startswith("bob") and "300 m" in row
        await page.wait_for("document.querySelectorAll('#map .marker.member').length === 1")

        # Chat both ways: Bob reads what Alice types, the page shows what Bob says.
        await page.fill("#chat-text", "on my way")
        await page.click("#chat-send")
        said = await bob.expect("chat", timeout_s=10)
        assert said["text"] == "on my way" and said["display_name"] == "Alice"
        await bob.request({"type": "chat", "room": room, "text": "see you at the top"},
                          "chat_sent")
        await page.wait_for("document.getElementById('chat-log').textContent"
                            ".includes('bob: see you at the top')")

        await page.screenshot(screenshot_path(tmp_path, "web-client-room.png"))

        # Leave: Bob sees Alice go.
        await page.click("#leave")
        gone = await bob.expect("participant_left", timeout_s=10)
        assert gone["participant_id"] == arrival["participant_id"]
        assert await page.evaluate("window.disco.pc === null")
    finally:
        await tone.close()
        await bob.close()


async def test_guest_joins_nearby_with_a_radius(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    # Someone already nearby, as a guest over the plain protocol.
    r = await server.http.post("/api/auth/guest", json={"display_name": "Hiker"})
    assert r.status_code == 201, r.text
    hiker = await server.connect(r.json()["access_token"])
    hiker_joined = await hiker.request({"type": "join", "room": "nearby"}, "joined")
    await hiker.send({"type": "location", "lat": HOME[0] + 200 / M_PER_DEG, "lon": HOME[1],
                      "accuracy_m": 10})

    page = await browser.new_page(width=420, height=900)  # a phone-sized screen
    await page.send("Network.enable")
    await page.goto(f"{server.base_url}/app/")

    # A failed log-in says why, in the page.
    await page.fill("#username", "nobody")
    await page.fill("#password", "wrong password")
    await page.click("#login")
    refused = await page.wait_for("!document.getElementById('error').hidden"
                                  " && document.getElementById('error-text').textContent")
    assert "password" in refused.lower() or "username" in refused.lower(), refused

    await page.fill("#guest-name", "Walker")
    await page.click("#guest")
    me = await page.wait_for("window.disco.me")
    assert me["kind"] == "guest"
    assert await page.evaluate("document.getElementById('groups-card').hidden")

    # Walker stands 200 m south of Hiker and picks a radius of 800 m.
    await browser.cdp.send("Browser.grantPermissions",
                           {"origin": server.base_url, "permissions": ["geolocation"]})
    await page.send("Emulation.setGeolocationOverride",
                    {"latitude": HOME[0], "longitude": HOME[1], "accuracy": 10})
    await set_range(page, "#radius", 800)
    assert await page.evaluate("document.getElementById('radius-out').textContent") == "800 m"

    # Joining nearby turns location sharing on; the server then tells each of
    # them about the other, as strangers: a name and a rounded distance.
    await page.click("#join-nearby")
    while not (news := await hiker.expect("nearby", timeout_s=10))["people"]:
        pass  # the first one came when Hiker's own fix arrived: nobody around yet
    (walker,) = news["people"]
    assert walker["display_name"] == "Walker" and walker["distance"] == "~200 m"
    assert await page.evaluate("window.disco.watchId !== null")
    hiker_row = f'[data-participant-id="{hiker_joined["participant_id"]}"]'
    shown = await page.wait_for(f"document.querySelector('{hiker_row}')?.textContent")
    assert "Hiker" in shown and "~200 m" in shown
    assert server.app_state.rooms is not None
    nearby = server.app_state.rooms.get("nearby")
    assert nearby is not None
    assert nearby.participants[walker["participant_id"]].radius_m == 800

    # Moving the slider while in the room changes the radius on the server.
    await set_range(page, "#radius", 1500)
    await eventually(lambda: nearby.participants[walker["participant_id"]].radius_m == 1500)

    await page.wait_for("window.disco.pc?.connectionState === 'connected'", MEDIA_TIMEOUT_S)
    # My hearing radius is drawn on the map; strangers are never on it, only in the list.
    await page.wait_for("window.discoMap.drawn?.includes('hearing')", 20)
    assert not await page.evaluate("document.querySelector('#map .marker.member')")

    # Errors from the server are shown plainly: a guest cannot join a group room.
    await page.evaluate("window.disco.ws.send(JSON.stringify({type: 'join', room: 'group:1'}))")
    text = await page.wait_for("!document.getElementById('error').hidden"
                               " && document.getElementById('error-text').textContent")
    assert "guest" in text and "(forbidden)" in text
    await page.screenshot(screenshot_path(tmp_path, "web-client-nearby.png"))

    # The call's node goes away (a cluster tells relayed clients left/host_lost): the
    # page joins again by itself, with the same radius, and is placed anew.
    (mine,) = [p for p in nearby.participants.values() if p.peer.display_name == "Walker"]
    session = mine.peer
    session.participants.pop("nearby")  # type: ignore[attr-defined]
    await server.app_state.rooms.leave(mine)
    session.send({"type": "left", "room": "nearby", "reason": "host_lost"})

    def walkers() -> list[Any]:
        room = server.app_state.rooms.get("nearby")
        return [p for p in (room.participants.values() if room else ())
                if p.peer.display_name == "Walker"]

    await eventually(lambda: [p.peer for p in walkers()] == [session])
    assert walkers()[0].radius_m == 1500
    # A draining node says reconnect: the page opens a new socket and rejoins the room.
    session.send({"type": "reconnect", "reason": "draining"})
    await eventually(lambda: [p.peer is session for p in walkers()] == [False], 15)
    await hiker.close()
