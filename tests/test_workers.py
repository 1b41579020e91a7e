"""``disco serve --workers N``: N nodes behind one port, started and stopped as a user would."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from common.settings import Settings
from signaling import workers
from tests.test_cli import DISCO, clean_env, free_port


def test_one_worker_needs_nothing_more() -> None:
    workers.check_settings(Settings(_env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize(("update", "says"), [
    ({}, "DISCO_REDIS_URL"),
    ({"redis_url": "redis://127.0.0.1:6379/0"}, "PostgreSQL"),
])
def test_several_workers_need_redis_and_postgresql(update: dict[str, str], says: str) -> None:
    settings = Settings(_env_file=None, workers=3, **update)  # type: ignore[arg-type]
    with pytest.raises(workers.WorkersError, match=says):
        workers.check_settings(settings)


def test_each_worker_is_a_node_of_its_own() -> None:
    settings = Settings(_env_file=None, node_id="east", workers=4)  # type: ignore[call-arg]
    assert [workers.worker_settings(settings, i).node_id for i in range(2)] == \
        ["east-w0", "east-w1"]
    assert workers.worker_settings(settings, 0).workers == 1


def test_the_command_refuses_workers_without_redis(tmp_path: Path) -> None:
    result = subprocess.run([DISCO, "serve", "--workers", "2", "--port", str(free_port())],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "--workers 2" in result.stderr and "DISCO_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def _workers_of(pid: int) -> set[int]:
    """The worker processes ``pid`` spawned (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == pid and b"spawn_main" in cmdline:
                found.add(int(entry.name))
    return found


def test_two_workers_serve_one_port_and_stop_together(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = {**clean_env(), "DISCO_DATABASE_URL": postgres_url, "DISCO_REDIS_URL": redis_url,
           "DISCO_REDIS_PREFIX": redis_prefix, "DISCO_NODE_ID": "box"}
    proc = subprocess.Popen([DISCO, "serve", "--workers", "2", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    ready = f"Disco is ready: web client at http://127.0.0.1:{port}/app/ (2 workers)"
    try:
        deadline = time.monotonic() + 90
        while not any(ready in line for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        assert any(ready in line for line in lines), "".join(lines)
        seen: set[str] = set()
        for _ in range(200):  # a new connection each time: the kernel hands it to either worker
            seen.add(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5,
                               headers={"Connection": "close"}).json()["node"])
            if seen == {"box-w0", "box-w1"}:
                break
        assert seen == {"box-w0", "box-w1"}
        workers_pids = _workers_of(proc.pid)
        assert len(workers_pids) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=5)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert output.count("Disco is ready: web client at") == 1
    assert "Traceback" not in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers_pids), \
        "a worker outlived the parent"
