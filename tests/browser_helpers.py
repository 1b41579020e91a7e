"""Drive a real headless Chromium over the Chrome DevTools Protocol (CDP).

No Selenium or Playwright: Chromium is started with ``--remote-debugging-port=0``,
writes the port it chose to ``DevToolsActivePort`` in its profile directory, and
we talk JSON over a WebSocket (the ``websockets`` package) to it. One browser
connection carries every page ("flattened" target sessions).

Everything stays on the loopback: the flags below turn off Chromium's
background traffic (updates, sync, safe browsing, QUIC), and ``Page`` can
restrict WebRTC to 127.0.0.1 candidates (see ``LOOPBACK_ONLY_WEBRTC``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.1

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",              # containers and CI run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--mute-audio",                           # play nothing on the test machine
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",     # a microphone that beeps
    "--use-fake-ui-for-media-stream",         # grant getUserMedia without a prompt
    "--allow-loopback-in-peer-connection",    # gather 127.0.0.1 host candidates
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, no mDNS lookups
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)

# Injected before any page script: the page's peer connections report only
# their 127.0.0.1 UDP candidates, so nothing ever sends to another interface.
LOOPBACK_ONLY_WEBRTC = """
(() => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    set onicecandidate(handler) {
      super.onicecandidate = (event) => {
        const c = event.candidate;
        const loopback = c && c.address === "127.0.0.1" && c.protocol === "udp";
        if (!c || !c.candidate || loopback) handler(event);
      };
    }
    get onicecandidate() { return super.onicecandidate; }
  };
})();
"""


class CdpError(Exception):
    """A CDP command failed, or page JavaScript threw."""


class Cdp:
    """One WebSocket to the browser; commands by id, events to listeners."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                future = self._pending.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
                elif "method" in message:
                    self.events.append(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("browser connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            command["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._ws.send(json.dumps(command))
        reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab: evaluate JavaScript, drive the UI through the DOM, screenshots."""

    def __init__(self, cdp: Cdp, session_id: str) -> None:
        self.cdp = cdp
        self.session_id = session_id

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.cdp.send(method, params, self.session_id)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (promises awaited), as JSON."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
        })
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression[:80]!r} threw: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10.0) -> Any:
        """Poll until ``expression`` is truthy (as in JavaScript); returns its value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if js_truthy(value):
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"waited {timeout_s}s for {expression!r}; page error banner: "
                    f"{await self.evaluate(ERROR_TEXT)!r}; console: {self.console()[-10:]}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    async def fill(self, selector: str, text: str) -> None:
        """Type into an input as a user would (value set, input event fired)."""
        await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.focus(); e.value = {json.dumps(text)};"
            " e.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    async def click(self, selector: str) -> None:
        """Click a visible element (fails if it is missing or hidden)."""
        visible = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e || !e.offsetParent) return false; e.click(); return true; })()"
        )
        if not visible:
            raise CdpError(f"no visible element {selector!r} to click")

    async def center_of(self, selector: str) -> tuple[float, float]:
        """The viewport coordinates of a visible element's centre (scrolled into view)."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e || !e.offsetParent) return null;"
            # Scroll the window only: scrollIntoView would also scroll clipped
            # containers (a map's panes) under the element.
            " const top = e.getBoundingClientRect().top;"
            " window.scrollTo(0, window.scrollY + top - innerHeight / 2);"
            " const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if box is None:
            raise CdpError(f"no visible element {selector!r}")
        return float(box[0]), float(box[1])

    async def press(self, selector: str, hold_s: float) -> None:
        """Press the mouse on an element, hold ``hold_s`` seconds, release (real input events)."""
        x, y = await self.center_of(selector)
        for kind, pause in (("mousePressed", hold_s), ("mouseReleased", 0.0)):
            await self.send("Input.dispatchMouseEvent", {
                "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1,
            })
            await asyncio.sleep(pause)

    async def key(self, key: str, code: str, down: bool) -> None:
        """A real key event (``key`` as KeyboardEvent.key, ``code`` as .code)."""
        await self.send("Input.dispatchKeyEvent", {
            "type": "keyDown" if down else "keyUp", "key": key, "code": code,
            "windowsVirtualKeyCode": 32 if key == " " else 0,
        })

    def requests(self) -> list[str]:
        """Every URL this page asked for so far (needs ``Network.enable``)."""
        return [e["params"]["request"]["url"] for e in self.cdp.events
                if e["method"] == "Network.requestWillBeSent"
                and e.get("sessionId") == self.session_id]

    async def screenshot(self, path: Path) -> Path:
        result = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
        })
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))
        return path

    def console(self) -> list[str]:
        """Console messages and uncaught exceptions seen so far on any page."""
        lines = []
        for event in self.cdp.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description", "")))
                                for a in params["args"])
                lines.append(f"{params['type']}: {args}")
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                lines.append("exception: " + str(
                    details.get("exception", {}).get("description") or details.get("text")))
        return lines


def js_truthy(value: Any) -> bool:
    """JavaScript's truthiness for a JSON value: ``{}`` (also what a DOM node becomes) is true."""
    return value is not None and value is not False and value != 0 and value != ""


ERROR_TEXT = "(document.getElementById('error-text') || {}).textContent || ''"


class Browser:
    def __init__(self, cdp: Cdp, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.cdp = cdp
        self.process = process
        self.log_path = log_path

    async def new_context(self) -> str:
        """A separate browser profile (its own storage, cookies, permissions)."""
        return str((await self.cdp.send("Target.createBrowserContext"))["browserContextId"])

    async def new_page(self, *, loopback_webrtc: bool = True, width: int = 1100,
                       height: int = 900, context_id: str | None = None,
                       mobile: bool = False) -> Page:
        params: dict[str, Any] = {"url": "about:blank"}
        if context_id is not None:
            params["browserContextId"] = context_id
        target = await self.cdp.send("Target.createTarget", params)
        attached = await self.cdp.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.cdp, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
        })
        if loopback_webrtc:
            await page.send("Page.addScriptToEvaluateOnNewDocument",
                            {"source": LOOPBACK_ONLY_WEBRTC})
        return page

    def log_tail(self) -> str:
        """The end of Chromium's own log (stdout and stderr)."""
        return _tail(self.log_path)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


async def _devtools_url(profile: Path, process: asyncio.subprocess.Process, log_path: Path) -> str:
    """Chromium writes "<port>\\n<browser path>" to DevToolsActivePort when it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError):
            port, path = marker.read_text().split("\n")[:2]
            if port and path:
                return f"ws://127.0.0.1:{int(port)}{path}"
        await asyncio.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"chromium did not open its DevTools port within {STARTUP_TIMEOUT_S}s")


@contextlib.asynccontextmanager
async def launch_chromium(binary: str, workdir: Path) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile in ``workdir``, closed afterwards."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one from a reused profile
    log_path = workdir / "chromium.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )
    try:
        url = await _devtools_url(profile, process, log_path)
        ws = await websockets.connect(url, max_size=64 * 1024 * 1024)
        cdp = Cdp(ws)
        try:
            yield Browser(cdp, process, log_path)
        finally:
            with contextlib.suppress(Exception):
                await cdp.send("Browser.close")
            await cdp.close()
    finally:
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
