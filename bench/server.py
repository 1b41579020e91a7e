"""What the voice benches share: a ``disco serve`` to measure, its accounts, its CPU.

``start_server`` runs this checkout's server (or another tree's, for
before/after runs) on a fresh SQLite database, optionally beside a media
worker (``MediaWorker``); ``setup_accounts`` registers N users into one group;
``cpu_seconds`` reads a process's user+system time from /proc.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REDIS = "redis://127.0.0.1:6379/2"
"""A media worker's Redis unless ``DISCO_TEST_REDIS_URL`` says otherwise."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


# --- server and accounts --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BENCH_PLANS = {"default": "bench", "plans": {"bench": {
    "max_group_members": 1000, "voice": True, "music": True, "history_days": 1,
    "max_places": 1}}}
"""The one plan a bench server runs: no member limit low enough to stop a big room."""


def server_env(workdir: Path, database: str) -> dict[str, str]:
    """The ``DISCO_*`` settings of every bench server: dev mode, a fresh SQLite file
    ``database`` in ``workdir``, media on 127.0.0.1, ``BENCH_PLANS``, logins unlimited."""
    plans = workdir / "plans.json"
    plans.write_text(json.dumps(BENCH_PLANS))
    return {
        "DISCO_DEV": "true",
        "DISCO_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / database}",
        "DISCO_JWT_SECRET": "bench-" + secrets.token_hex(16),
        "DISCO_RTC_HOST_ADDRESSES": "127.0.0.1",
        "DISCO_PLANS_FILE": str(plans),
        "DISCO_UPLOAD_DIR": str(workdir / "uploads"),
        "DISCO_LOG_LEVEL": "warning",
        # every bench account registers from 127.0.0.1: lift the per-address limit
        "DISCO_LOGIN_ADDRESS_BURST": "100000",
        "DISCO_LOGIN_ADDRESS_PER_MIN": "100000",
    }


@dataclass
class MediaWorker:
    """``--media``: where the media worker meets the whole one, and its ``/metrics`` port."""

    redis_url: str
    prefix: str
    metrics_port: int


def disco_binary() -> str:
    """The ``disco`` command of this interpreter's environment."""
    return shutil.which("disco", path=str(Path(sys.executable).parent)) or "disco"


def start_server(workdir: Path, port: int, cpu: int | None = None,
                  source: Path | None = None, media: MediaWorker | None = None
                  ) -> subprocess.Popen[bytes]:
    """``disco serve`` on ``port``: this checkout's, or the code in ``source`` (another
    version's tree, run with this interpreter and its packages); with ``media``, beside
    a media worker that hosts the rooms."""
    env = {**os.environ, **server_env(workdir, f"bench-{port}.db"),
           "DISCO_PORT": str(port), "DISCO_HOST": "127.0.0.1"}
    serve = ["serve", "--port", str(port)]
    if media is not None:
        env.update({"DISCO_REDIS_URL": media.redis_url, "DISCO_REDIS_PREFIX": media.prefix,
                    "DISCO_MEDIA_METRICS_PORT": str(media.metrics_port)})
        serve += ["--media-workers", "1"]
    command = [disco_binary()]
    if source is not None:
        env["PYTHONPATH"] = str(source)
        # -P: without it ``-c`` puts the working directory (this checkout) first on
        # sys.path, ahead of PYTHONPATH, and "before" would run this tree's code.
        command = [sys.executable, "-P", "-c", "from signaling.cli import main; main()"]
    log = (workdir / f"server-{port}.log").open("wb")
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen(
        [*command, *serve], env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin,
    )


def worker_pids(log: Path, timeout_s: float = 120.0) -> tuple[int, int]:
    """(the whole worker's pid, the media worker's) from ``disco serve --media-workers 1``'s
    log, once both say they are ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        whole = re.search(r"^node \S+ is ready \(pid (\d+)\)", text, re.M)
        media = re.search(r"^media node \S+ is ready \(pid (\d+)\)", text, re.M)
        if whole and media:
            return int(whole.group(1)), int(media.group(1))
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not start: {text[-2000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server; kill it if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def setup_accounts(base: str, n: int) -> tuple[int, list[str]]:
    import httpx

    with httpx.Client(base_url=f"http://{base}", timeout=30) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.get("/api/auth/me")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        tokens = []
        run = secrets.token_hex(3)
        for i in range(n):
            r = http.post(
                "/api/auth/register",
                json={"username": f"b{run}u{i}", "password": "bench-password-1"},
            )
            r.raise_for_status()
            tokens.append(r.json()["access_token"])
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        group = http.post("/api/groups", json={"name": "bench"}, headers=auth)
        group.raise_for_status()
        gid = int(group.json().get("id") or group.json()["group"]["id"])
        for token in tokens[1:]:
            code = http.post(f"/api/groups/{gid}/invites", headers=auth)
            code.raise_for_status()
            for attempt in range(20):
                # The invite route's session commits after the response is sent,
                # so an immediate accept can race it: retry briefly on 404.
                accepted = http.post(
                    f"/api/invites/{code.json()['code']}/accept",
                    headers={"Authorization": f"Bearer {token}"},
                )
                if accepted.status_code != 404 or attempt == 19:
                    if accepted.is_error:
                        raise RuntimeError(f"invite accept: {accepted.status_code} {accepted.text}")
                    break
                time.sleep(0.05)
    return gid, tokens


async def forget(media: MediaWorker) -> None:
    """Delete the run's keys from the shared Redis."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(media.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=media.prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
