"""Finding the real services tests need, and the skip-or-fail rule.

On a user's machine a missing service (PostgreSQL, Redis, coturn, PulseAudio,
Chromium) skips the test with a reason. With ``DISCO_REQUIRE_SERVICES=1`` (set
by ``.ci/run``) the same absence fails the test instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

DISCO = str(Path(sys.executable).with_name("disco"))
"""This environment's ``disco`` command: tests run it as a user would."""

POSTGRES_URL = os.environ.get("DISCO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DISCO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def strict() -> bool:
    return os.environ.get("DISCO_REQUIRE_SERVICES", "") not in ("", "0", "false")


def missing(what: str) -> None:
    """Skip (or, in CI, fail) because ``what`` is not available."""
    message = f"{what} is unavailable"
    if strict():
        pytest.fail(f"{message} (DISCO_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(message)  # only outside CI: DISCO_REQUIRE_SERVICES=1 fails above instead


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 5.0) -> None:
    """Terminate a test's child process; kill it if it is still there after ``timeout_s``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} (Debian package {package}) not installed")
    assert path is not None
    return path


def free_tcp_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
