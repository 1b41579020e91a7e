"""Benchmark: how fast the web client paints on a phone, and how much JS it loads.

Not a test. Starts ``disco serve`` on loopback (a temporary SQLite database),
then a headless Chromium (``tests/browser_helpers.py``, raw CDP) with a
390x844 mobile viewport, and loads ``/app/`` ``--runs`` times, each in a fresh
browser context (cold cache, no service worker yet). Per run it reads:

- first contentful paint and largest contentful paint (the sign-in card: the
  first *meaningful* paint of this page) from the page's Performance API;
- the bytes of JavaScript the page loaded before sign-in (CDP Network events:
  responses of type Script, bytes on the wire);
- then it signs in (a token made over REST, set as the page would) and
  reloads: the time until the MapLibre map has loaded, and the JS bytes
  after sign-in (MapLibre comes in only now).

    .venv/bin/python -m bench.web_paint [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.browser_helpers import Browser, Page, launch_chromium

PHONE = {"width": 390, "height": 844, "mobile": True}
PAINTS_JS = """Promise.all([
  new Promise((resolve) => new PerformanceObserver((list) => {
    const fcp = list.getEntriesByName("first-contentful-paint")[0];
    if (fcp) resolve(fcp.startTime);
  }).observe({type: "paint", buffered: true})),
  new Promise((resolve) => new PerformanceObserver((list) => {
    resolve(list.getEntries().at(-1).startTime);
  }).observe({type: "largest-contentful-paint", buffered: true})),
]).then(([fcp, lcp]) => ({fcp, lcp}))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def disco_serve(workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DISCO_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'disco.db'}",
           "DISCO_UPLOAD_DIR": str(workdir / "uploads"), "DISCO_LOG_LEVEL": "warning"}
    disco = Path(sys.executable).parent / "disco"
    proc = subprocess.Popen([str(disco), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("disco serve did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def register(base: str, username: str) -> str:
    body = json.dumps({"username": username, "password": "correct horse battery"}).encode()
    request = urllib.request.Request(f"{base}/api/auth/register", body,
                                     {"Content-Type": "application/json"})
    return str(json.loads(urllib.request.urlopen(request).read())["access_token"])


def script_bytes(page: Page, since: int) -> int:
    """Bytes on the wire of Script responses among the CDP events after index ``since``."""
    events = [e for e in page.cdp.events[since:] if e.get("sessionId") == page.session_id]
    scripts = {e["params"]["requestId"] for e in events
               if e["method"] == "Network.responseReceived" and e["params"]["type"] == "Script"}
    return sum(int(e["params"]["encodedDataLength"]) for e in events
               if e["method"] == "Network.loadingFinished"
               and e["params"]["requestId"] in scripts)


async def one_run(browser: Browser, base: str, token: str) -> dict[str, Any]:
    context = str((await browser.cdp.send("Target.createBrowserContext"))["browserContextId"])
    page = await browser.new_page(context_id=context, **PHONE)  # type: ignore[arg-type]
    await page.send("Network.enable")
    mark = len(page.cdp.events)
    await page.goto(f"{base}/app/")
    paints = await page.evaluate(PAINTS_JS)
    before = script_bytes(page, mark)
    # Signed in: the same page with a token, until the map has loaded.
    await page.evaluate(f"localStorage.setItem('disco.token', {json.dumps(token)})")
    # Cold again: no HTTP cache, and past the service worker the first load installed.
    await page.send("Network.setCacheDisabled", {"cacheDisabled": True})
    await page.send("Network.setBypassServiceWorker", {"bypass": True})
    mark = len(page.cdp.events)
    started = time.perf_counter()
    await page.goto(f"{base}/app/")
    await page.wait_for("window.discoMap.map && window.discoMap.map.loaded()", 30)
    map_ms = (time.perf_counter() - started) * 1000
    after = script_bytes(page, mark)
    await browser.cdp.send("Target.disposeBrowserContext", {"browserContextId": context})
    return {**paints, "js_before": before, "map_ms": map_ms, "js_after": after}


async def main_async(runs: int) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs chromium (Debian package chromium)")
    with tempfile.TemporaryDirectory() as tmp, disco_serve(Path(tmp)) as base:
        token = register(base, "bench")
        async with launch_chromium(chromium, Path(tmp)) as browser:
            results = [await one_run(browser, base, token) for _ in range(runs)]
    for r in results:
        print(f"FCP {r['fcp']:6.0f} ms  LCP {r['lcp']:6.0f} ms  "
              f"JS before sign-in {r['js_before'] / 1024:6.1f} KiB  "
              f"map ready {r['map_ms']:6.0f} ms  JS after sign-in {r['js_after'] / 1024:7.1f} KiB")
    med = {k: statistics.median(r[k] for r in results)
           for k in ("fcp", "lcp", "js_before", "map_ms", "js_after")}
    print(f"median of {runs}: first contentful paint {med['fcp']:.0f} ms, first meaningful "
          f"(largest contentful) paint {med['lcp']:.0f} ms, JS before sign-in "
          f"{med['js_before'] / 1024:.1f} KiB; signed in: map ready {med['map_ms']:.0f} ms, "
          f"JS {med['js_after'] / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main_async(parser.parse_args().runs))


if __name__ == "__main__":
    main()
