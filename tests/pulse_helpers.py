"""A private PulseAudio server with null sinks: a real sound device for tests.

PortAudio (sounddevice) reaches PulseAudio through ALSA's pulse plugin
(libasound2-plugins): the ALSA device ``pulse``. Which PulseAudio sink and
source it uses comes from ``PULSE_SINK`` / ``PULSE_SOURCE`` in the client's
environment, and which server from ``PULSE_SERVER``. So a test can give a
client a "microphone" (the monitor of a null sink that the test plays a tone
into with ``paplay``) and a "speaker" (another null sink whose monitor the
test records with ``parec``), all in a temporary directory, touching nothing
of the machine's own audio.

Missing pieces skip the test with the reason (or fail it under
``DISCO_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes.util
import glob
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.services import missing, require_binary, stop_process

START_TIMEOUT_S = 15.0
RECORD_RATE_HZ = 48_000
ALSA_PULSE_PLUGIN_GLOB = "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"

Samples = npt.NDArray[np.int16]


def require_pulse_stack() -> dict[str, str]:
    """The binaries, or skip/fail naming the Debian package that is missing."""
    found = {
        "pulseaudio": require_binary("pulseaudio", "pulseaudio"),
        "pactl": require_binary("pactl", "pulseaudio-utils"),
        "paplay": require_binary("paplay", "pulseaudio-utils"),
        "parec": require_binary("parec", "pulseaudio-utils"),
    }
    if ctypes.util.find_library("portaudio") is None:
        missing("PortAudio (Debian package libportaudio2)")
    if not glob.glob(ALSA_PULSE_PLUGIN_GLOB):
        missing("ALSA's PulseAudio plugin (Debian package libasound2-plugins)")
    return found


@dataclass
class Pulse:
    """A running private PulseAudio; ``env`` points clients (and pa tools) at it."""

    root: Path
    bins: dict[str, str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    children: list[asyncio.subprocess.Process] = field(default_factory=list)

    def client_env(self, sink: str, source: str) -> dict[str, str]:
        """Environment for a program whose ALSA ``pulse`` device should use these."""
        return {**self.env, "PULSE_SINK": sink, "PULSE_SOURCE": source}

    async def pactl(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.bins["pactl"], *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def play(self, sink: str, wav: Path) -> asyncio.subprocess.Process:
        """Play ``wav`` into ``sink`` in the background (stopped at the end of the test)."""
        proc = await asyncio.create_subprocess_exec(
            self.bins["paplay"], f"--device={sink}", str(wav), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self.children.append(proc)
        return proc

    async def record(self, source: str, path: Path) -> Recording:
        """Start recording ``source`` (e.g. ``speaker.monitor``) as raw 48 kHz mono s16."""
        handle = path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            self.bins["parec"], f"--device={source}", "--format=s16le",
            f"--rate={RECORD_RATE_HZ}", "--channels=1", "--latency-msec=20", env=self.env,
            stdout=handle, stderr=asyncio.subprocess.DEVNULL,
        )
        handle.close()
        self.children.append(proc)
        return Recording(path, proc, time.monotonic())

    async def close(self) -> None:
        for proc in [*self.children, *([self.proc] if self.proc else [])]:
            await stop_process(proc)


@dataclass
class Recording:
    path: Path
    proc: asyncio.subprocess.Process
    started: float

    def samples(self) -> Samples:
        return np.fromfile(self.path, dtype="<i2").astype(np.int16)

    def last(self, seconds: float) -> Samples:
        data = self.samples()
        return data[-int(seconds * RECORD_RATE_HZ):]


@contextlib.asynccontextmanager
async def pulseaudio(root: Path, sinks: tuple[str, ...]) -> AsyncIterator[Pulse]:
    """Start PulseAudio (as root too: ``--system=false`` with its own runtime dir)."""
    bins = require_pulse_stack()
    runtime = root / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    socket_path = root / "native"
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(root),
        "PULSE_SERVER": f"unix:{socket_path}",
        "PULSE_RUNTIME_PATH": str(runtime),
    }
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    args = [
        bins["pulseaudio"], "--daemonize=no", "--system=false", "--exit-idle-time=-1", "-n",
        "--use-pid-file=no", "--disable-shm=yes", "--log-target=stderr",
        f"--load=module-native-protocol-unix socket={socket_path} auth-anonymous=1",
        *(f"--load=module-null-sink sink_name={name} rate={RECORD_RATE_HZ}" for name in sinks),
    ]
    pulse = Pulse(root, bins, env)
    log = (root / "pulseaudio.log").open("wb")
    pulse.proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
    )
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(RuntimeError):
                listed = await pulse.pactl("list", "short", "sinks")
                if all(name in listed for name in sinks):
                    break
            if pulse.proc.returncode is not None or time.monotonic() > deadline:
                text = (root / "pulseaudio.log").read_text(errors="replace")[-2000:]
                missing(f"a working PulseAudio (it did not start: {text.strip()})")
            await asyncio.sleep(0.1)
        yield pulse
    finally:
        await pulse.close()
