"""Sound devices through sounddevice (PortAudio): the microphone and the speaker.

The PortAudio callbacks run on PortAudio's own thread and do the minimum:
copy samples into (or out of) a bounded, locked buffer at the device's own
rate. Rate conversion to and from 48 kHz happens on the asyncio side, in
``read_frame`` / ``write``, so a slow resampler can never make the sound card
miss a deadline.

Devices are opened at 48 kHz when they accept it, else at their default rate
with conversion; ``--device-rate`` forces a rate (for devices that claim
48 kHz and then misbehave, and for tests of the conversion path).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np

from clients.desktop.audio import (
    CAPTURE_MAX_MS,
    CAPTURE_PREFILL_MS,
    FRAME_SAMPLES,
    PLAYOUT_MAX_MS,
    PLAYOUT_PREFILL_MS,
    SAMPLE_RATE_HZ,
    Pcm,
    PlayoutBuffer,
    Resampler,
    SampleBuffer,
    ms_to_samples,
)
from clients.desktop.errors import DeviceError

log = logging.getLogger(__name__)

DeviceSpec = int | str | None


def _sd() -> ModuleType:
    """sounddevice, imported late: it needs the PortAudio shared library."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise DeviceError(
            f"sound devices are unavailable: {exc} (install the desktop extra,"
            " pip install 'disco[desktop]', and PortAudio: apt install libportaudio2)"
        ) from None
    return sounddevice


def list_devices() -> str:
    sd = _sd()
    try:
        return str(sd.query_devices())
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list sound devices: {exc}") from None


def parse_spec(text: str | None) -> DeviceSpec:
    """``--input``/``--output``: a device number from --list-devices, or part of its name."""
    if text is None or text == "":
        return None
    return int(text) if text.strip().isdigit() else text


def _resolve(spec: DeviceSpec, kind: str) -> tuple[int, dict[str, Any]]:
    sd = _sd()
    channels_key = f"max_{kind}_channels"
    try:
        info = sd.query_devices(spec, kind=kind) if spec is not None else sd.query_devices(
            kind=kind
        )
    except (ValueError, sd.PortAudioError) as exc:
        wanted = f"{spec!r}" if spec is not None else "default"
        raise DeviceError(f"no {kind} device {wanted}: {exc} (see --list-devices)") from None
    if int(info.get(channels_key, 0)) < 1:
        raise DeviceError(f"device {info['name']!r} has no {kind} channels (see --list-devices)")
    return int(info["index"]), dict(info)


def _pick_rate(
    index: int, info: dict[str, Any], kind: str, channels: int, forced: int | None = None
) -> int:
    sd = _sd()
    if forced is not None:
        return forced
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=index, samplerate=SAMPLE_RATE_HZ, channels=channels, dtype="int16")
        return SAMPLE_RATE_HZ
    except (ValueError, sd.PortAudioError):
        rate = int(info.get("default_samplerate") or 0)
        if rate <= 0:
            raise DeviceError(f"device {info['name']!r} reports no usable sample rate") from None
        return rate


class _Device:
    """What a microphone and a speaker share: one mono int16 PortAudio stream."""

    direction = ""  # "input" or "output", for messages
    what = ""  # "microphone" or "speaker"
    index: int
    name: str
    rate: int

    def _open(self, stream_type: Any, callback: Any) -> None:
        try:
            self._stream = stream_type(
                device=self.index, samplerate=self.rate, channels=1, dtype="int16",
                callback=callback,
            )
        except (ValueError, _sd().PortAudioError) as exc:
            raise DeviceError(
                f"cannot open {self.direction} device {self.name!r}: {exc}"
            ) from None
        log.info("%s: %s at %d Hz", self.what, self.name, self.rate)

    def start(self) -> None:
        try:
            self._stream.start()
        except Exception as exc:
            raise DeviceError(
                f"cannot start {self.direction} device {self.name!r}: {exc}"
            ) from None

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as exc:  # closing must not mask why we are closing
            log.debug("closing the %s: %r", self.what, exc)


class Microphone(_Device):
    """Captures from an input device; ``read_frame`` gives 20 ms at 48 kHz or None."""

    direction, what = "input", "microphone"

    def __init__(self, spec: DeviceSpec = None, rate_hz: int | None = None) -> None:
        sd = _sd()
        self.index, info = _resolve(spec, "input")
        self.name = str(info["name"])
        self.rate = _pick_rate(self.index, info, "input", 1, rate_hz)
        self._raw = SampleBuffer(ms_to_samples(CAPTURE_MAX_MS, self.rate))
        # A prefill after running dry: PortAudio delivers in bursts under load, and
        # a steady 40 ms cushion beats a click of silence every other frame.
        self._ready = PlayoutBuffer(
            ms_to_samples(CAPTURE_MAX_MS), ms_to_samples(CAPTURE_PREFILL_MS)
        )
        self._resampler = Resampler(self.rate, SAMPLE_RATE_HZ)
        self.overflows = 0
        self._open(sd.InputStream, self._callback)

    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.overflows += 1
        self._raw.push(np.array(indata[:, 0], dtype=np.int16))

    def read_frame(self) -> Pcm | None:
        raw = self._raw.pop_all()
        if raw.size:
            self._ready.push(self._resampler.convert(raw))
        return self._ready.read(FRAME_SAMPLES)


class Speaker(_Device):
    """Plays to an output device; ``write`` takes mono 48 kHz samples."""

    direction, what = "output", "speaker"

    def __init__(self, spec: DeviceSpec = None, rate_hz: int | None = None) -> None:
        sd = _sd()
        self.index, info = _resolve(spec, "output")
        self.name = str(info["name"])
        self.rate = _pick_rate(self.index, info, "output", 1, rate_hz)
        self.buffer = PlayoutBuffer(
            ms_to_samples(PLAYOUT_MAX_MS, self.rate), ms_to_samples(PLAYOUT_PREFILL_MS, self.rate)
        )
        self._resampler = Resampler(SAMPLE_RATE_HZ, self.rate)
        self._open(sd.OutputStream, self._callback)

    def _callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        outdata[:, 0] = self.buffer.read(frames)

    def write(self, pcm: Pcm) -> None:
        self.buffer.push(self._resampler.convert(pcm))
