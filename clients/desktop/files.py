"""Audio files: decoded input (WAV at any rate or channel count, or anything
FFmpeg reads) as 20 ms mono 48 kHz frames, and WAV output.

Decoding goes through PyAV rather than the stdlib ``wave`` module because
``wave`` reads only integer PCM; PyAV also takes float WAV, FLAC, Ogg or MP3,
and its resampler does the rate and channel conversion. Files are streamed,
never loaded whole: a one-hour music file would be 345 MB as samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from clients.desktop.audio import (
    FRAME_SAMPLES,
    PLAYOUT_MAX_MS,
    PLAYOUT_PREFILL_MS,
    SAMPLE_RATE_HZ,
    FrameConverter,
    Pcm,
    PlayoutBuffer,
    ms_to_samples,
)
from clients.desktop.errors import BadInputFile
from clients.desktop.rtc import FrameClock

log = logging.getLogger(__name__)

SAMPLE_WIDTH_BYTES = 2


@contextlib.contextmanager
def _audio_stream(path: Path) -> Iterator[tuple[Any, Any]]:
    """The opened container and its first audio stream; closed afterwards."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise BadInputFile(f"cannot read audio file {path}: {exc}") from None
    try:
        if not container.streams.audio:
            raise BadInputFile(f"{path} has no audio stream")
        yield container, container.streams.audio[0]
    finally:
        container.close()


def _decoded(path: Path) -> Iterator[Pcm]:
    """Mono 48 kHz chunks of ``path`` (any size), converting as needed."""
    with _audio_stream(path) as (container, stream):
        converter = FrameConverter()
        try:
            for frame in container.decode(stream):
                pcm = converter.convert(frame)
                if pcm.size:
                    yield pcm
            tail = converter.convert(None)
            if tail.size:
                yield tail
        except av.FFmpegError as exc:
            raise BadInputFile(f"cannot decode audio file {path}: {exc}") from None


def probe(path: Path) -> str:
    """Check that ``path`` decodes to audio; returns a one-line description.

    Reads the header and the first frame only, so a bad file is reported
    before the client connects rather than minutes into a session.
    """
    if not path.is_file():
        raise BadInputFile(f"audio file not found: {path}")
    with _audio_stream(path) as (container, stream):
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as exc:
            raise BadInputFile(f"cannot decode audio file {path}: {exc}") from None
        if first is None:
            raise BadInputFile(f"{path} holds no audio samples")
        channels = len(first.layout.channels)
        return f"{path.name}: {first.sample_rate} Hz, {channels} channel(s), {first.format.name}"


class FileSource:
    """20 ms frames from an audio file; at the end, ``None`` (or from the start if looping)."""

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = path
        self.loop = loop
        self.description = probe(path)
        self._chunks: Iterator[Pcm] = _decoded(path)
        self._pending = np.zeros(0, dtype=np.int16)
        self.finished = False

    def read_frame(self) -> Pcm | None:
        while self._pending.size < FRAME_SAMPLES and not self.finished:
            chunk = next(self._chunks, None)
            if chunk is None:
                if self.loop and self._pending.size == 0:
                    self._chunks = _decoded(self.path)
                    continue
                if not self.loop:
                    self.finished = True
                break
            self._pending = np.concatenate((self._pending, chunk))
        if self._pending.size == 0:
            return None
        frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
        if frame.size < FRAME_SAMPLES:
            frame = np.concatenate((frame, np.zeros(FRAME_SAMPLES - frame.size, np.int16)))
        return frame

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class WavWriter:
    """Mono 16-bit 48 kHz WAV, written frame by frame (readable even if we crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("wb")
        except OSError as exc:
            raise BadInputFile(f"cannot write {path}: {exc.strerror or exc}") from None
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(SAMPLE_WIDTH_BYTES)
        self._wav.setframerate(SAMPLE_RATE_HZ)
        self.samples_written = 0

    def write(self, pcm: Pcm) -> None:
        self._wav.writeframes(pcm.astype("<i2", copy=False).tobytes())
        self._file.flush()  # wave patches the header each write: the file is valid as it grows
        self.samples_written += int(pcm.size)

    def close(self) -> None:
        self._wav.close()
        self._file.close()


class FileSpeaker:
    """``--output-file``: what a speaker would play, written on a 20 ms clock.

    Clocked (not written as packets arrive) so the file's timeline is real
    time: gaps, outages and reconnects appear as silence where they happened.
    """

    def __init__(self, path: Path) -> None:
        self.writer = WavWriter(path)
        self.buffer = PlayoutBuffer(
            ms_to_samples(PLAYOUT_MAX_MS), ms_to_samples(PLAYOUT_PREFILL_MS)
        )
        self._task: asyncio.Task[None] | None = None

    def write(self, pcm: Pcm) -> None:
        self.buffer.push(pcm)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="file-speaker")

    async def _run(self) -> None:
        clock = FrameClock()
        while True:
            await clock.wait_next()
            self.writer.write(self.buffer.read(FRAME_SAMPLES))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
