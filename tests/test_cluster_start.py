"""Nodes started together on one empty PostgreSQL database all come up.

Each `disco serve` migrates at start-up; without a lock, two Alembic runs
racing on an empty database both create ``alembic_version`` and one dies
with UniqueViolation. ``common.db.migrate`` holds a PostgreSQL advisory
lock around the upgrade, so the others wait and then find nothing to do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from common import db
from tests.services import DISCO
from tests.services import free_tcp_port as free_port

NODES = 3
START_TIMEOUT_S = 120.0  # a cold numba cache compiles the nearby kernels in every node




def node_env(database_url: str, node: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env.update(DISCO_DATABASE_URL=database_url, DISCO_NODE_ID=f"n{node}",
               DISCO_JWT_SECRET="cluster-start-secret-0123456789")
    return env


def test_three_nodes_start_at_once_on_an_empty_database(postgres_url: str,
                                                        tmp_path: Path) -> None:
    ports = [free_port() for _ in range(NODES)]
    procs = [
        subprocess.Popen([DISCO, "serve", "--port", str(port)], cwd=tmp_path,
                         env=node_env(postgres_url, n), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for n, port in enumerate(ports)
    ]
    try:
        up: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(up) < NODES and time.monotonic() < deadline:
            for n, (port, proc) in enumerate(zip(ports, procs, strict=True)):
                if n in up:
                    continue
                if proc.poll() is not None:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"node {n} exited with {proc.returncode}:\n{out[-3000:]}")
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                except httpx.HTTPError:
                    continue
                if r.status_code == 200 and r.json()["node"] == f"n{n}":
                    up.add(n)
            time.sleep(0.2)
        assert up == set(range(NODES)), f"only {sorted(up)} answered within {START_TIMEOUT_S} s"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_disco_migrate_is_a_one_shot_step(postgres_url: str, tmp_path: Path) -> None:
    for _ in range(2):  # the second run finds nothing to do
        done = subprocess.run([DISCO, "migrate"], cwd=tmp_path, env=node_env(postgres_url, 0),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "migrated" in done.stdout


async def test_migrate_waits_for_the_lock_held_elsewhere(postgres_url: str) -> None:
    """While another session holds the migration lock, migrate waits for it."""
    holder, engine = db.make_engine(postgres_url), db.make_engine(postgres_url)
    try:
        async with holder.connect() as conn:
            await conn.exec_driver_sql(f"SELECT pg_advisory_lock({db.MIGRATION_LOCK_KEY})")
            assert await db.migration_lock_held(engine)
            waiting = asyncio.create_task(db.migrate(engine))
            await asyncio.sleep(1.0)
            assert not waiting.done()  # blocked on the lock, not racing
            await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({db.MIGRATION_LOCK_KEY})")
            await asyncio.wait_for(waiting, 30)
        assert not await db.migration_lock_held(engine)  # released after the upgrade
    finally:
        await holder.dispose()
        await engine.dispose()

