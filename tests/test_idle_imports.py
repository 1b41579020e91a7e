"""What a node loads before it needs it (issue #15: a voice node's memory).

A fresh process builds the whole node (``create_app`` + ``build_state``, dev
mode with a Web Push key, on a database already migrated) and reports which
optional heavyweights are in ``sys.modules``: none of numba (the nearby
kernels), Stripe, Alembic, the push libraries. A first nearby join then
loads the kernels. ``sys.modules`` is deterministic where RSS is not; the
RSS figure is in ``python -m bench.cluster`` (idle RSS per worker).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.db import make_engine, migrate

NOT_AT_IDLE = ("numba", "llvmlite", "stripe", "alembic", "mako", "pywebpush", "aiohttp",
               "aioapns", "h2", "pyfcm", "google.auth", "requests")

CHILD = """
import asyncio, json, os, sys, time
from common.settings import load_settings
from signaling.app import build_state, close_state
from signaling.cli import with_dev_vapid_keys
from signaling.ws.session import nearby_kernels

WATCH = json.loads(sys.argv[2])

async def main():
    settings = with_dev_vapid_keys(load_settings(None, database_url=sys.argv[1], dev=True))
    state = await build_state(settings, time.time)
    idle = [m for m in WATCH if m in sys.modules]
    await nearby_kernels()
    after_nearby = [m for m in WATCH if m in sys.modules]
    await close_state(state)
    print(json.dumps({"idle": idle, "after_nearby": after_nearby}))

asyncio.run(main())
"""


async def migrated(url: str) -> None:
    engine = make_engine(url)
    await migrate(engine)  # as `disco migrate` or an earlier start did
    await engine.dispose()


def test_a_node_loads_no_optional_heavyweight_until_used(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'disco.db'}"
    asyncio.run(migrated(url))
    done = subprocess.run([sys.executable, "-c", CHILD, url, json.dumps(NOT_AT_IDLE)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if done.returncode != 0:
        pytest.fail(done.stderr[-3000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["idle"] == []
    assert {"numba", "llvmlite"} <= set(report["after_nearby"])
