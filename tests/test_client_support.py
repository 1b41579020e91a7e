"""Helpers for the desktop client's tests (this module holds no tests).

Named ``test_client_*`` so it sits with the client's tests it serves. The
client runs as users run it: the installed ``disco-client`` command in a
subprocess (its own process, so its aioice loopback patch and its event loop
are its own), with output captured line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from common.settings import Settings
from tests.server_helpers import PASSWORD, LiveServer

SAMPLE_RATE_HZ = 48_000
CLIENT_START_TIMEOUT_S = 30.0
"""Generous: a cold start imports aiortc/PyAV on a machine shared with other tests."""

Samples = npt.NDArray[np.int16]

__test__ = False  # nothing to collect here


def media_settings(settings: Settings) -> Settings:
    """The test server offers only 127.0.0.1 as its ICE candidate: nothing leaves loopback."""
    return settings.model_copy(update={"rtc_host_addresses": ["127.0.0.1"]})


def client_command() -> list[str]:
    """The installed console script, else the module (same code, same exit codes)."""
    script = Path(sys.executable).with_name("disco-client")
    if script.exists():
        return [str(script)]
    found = shutil.which("disco-client")
    return [found] if found else [sys.executable, "-m", "clients.desktop.cli"]


def write_mono_wav(path: Path, freq_hz: float, seconds: float, rate_hz: int = SAMPLE_RATE_HZ,
                   channels: int = 1, amplitude: float = 0.25) -> Path:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    mono = (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32_767).astype("<i2")
    frames = np.repeat(mono[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(frames.tobytes())
    return path


def read_wav(path: Path) -> tuple[Samples, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        return data, w.getframerate()


def window(samples: Samples, start_s: float, end_s: float) -> Samples:
    return samples[int(start_s * SAMPLE_RATE_HZ) : int(end_s * SAMPLE_RATE_HZ)]


async def crew(server: LiveServer, *names: str, group: str = "crew") -> tuple[int, list[str]]:
    """Register ``names`` (password ``PASSWORD``) and put them all in one group."""
    tokens = [(await server.register(name))[0] for name in names]
    group_id = await server.group_with(tokens[0], *tokens[1:], name=group)
    return group_id, tokens


class ClientProcess:
    """``disco-client`` in a subprocess; stdout lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 stdin: bool = False) -> None:
        self.args = [*client_command(), *args]
        self.env = {**os.environ, "DISCO_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.env.pop("DISCO_TOKEN", None)
        self.stdin = stdin
        self.lines: list[str] = []
        self.stderr = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> ClientProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, env=self.env,
            stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        self._readers = [asyncio.create_task(self._read_stdout()),
                         asyncio.create_task(self._read_stderr())]
        return self

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        self.stderr = (await self.proc.stderr.read()).decode(errors="replace")

    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def wait_line(self, text: str, timeout_s: float = CLIENT_START_TIMEOUT_S,
                        occurrence: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(text) < occurrence:
            assert self.proc is not None
            if self.proc.returncode is not None:
                await asyncio.gather(*self._readers)
                if self.count(text) >= occurrence:
                    return
                raise AssertionError(f"client exited ({self.proc.returncode}) before {text!r}:\n"
                                     f"{self.output()}\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout_s:g} s:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()

    async def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            raise AssertionError(
                f"client still running after {timeout_s:g} s:\n{self.output()}"
            ) from None
        await asyncio.gather(*self._readers)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        self.kill()
        if self.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)
        for task in self._readers:
            task.cancel()


async def run_client(args: Sequence[str], timeout_s: float = 60.0,
                     env: dict[str, str] | None = None) -> tuple[int, ClientProcess]:
    """Run a client to its end; (exit code, the process with its output)."""
    client = await ClientProcess(args, env).start()
    try:
        return await client.wait(timeout_s), client
    finally:
        await client.close()
