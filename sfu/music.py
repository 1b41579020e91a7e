"""Server-side music: safe file lookup, uploads, decoding, and the play queue.

Files only ever come from two folders the operator chose: the read-only music
folder (``music_dir``) and the upload folder (``upload_dir``), where
``save_upload`` stores a validated copy under a content-derived id. A source
name is resolved without trusting it: no absolute paths, no ``..``, and after
following symlinks the file must still be inside the folder; it must be a
regular file under the size limit that PyAV decodes as audio.

``MusicQueue`` is the pure play/pause/skip/stop state machine; ``FileDecoder``
turns a file into 48 kHz mono 20 ms frames; ``MusicPlayer`` joins them and
adds one-frame fades so that play, pause, skip and stop never click.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import av
import numpy as np
from av.audio.resampler import AudioResampler

from sfu.ducking import fade
from sfu.errors import BadMusicRequest, MusicNotFound, MusicTooLarge
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm

logger = logging.getLogger(__name__)

MAX_SOURCE_NAME_CHARS = 255
UPLOAD_ID_RE = re.compile(r"^up-[0-9a-f]{24}$")
AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".ogg", ".oga", ".opus", ".flac", ".wav", ".m4a", ".aac", ".webm", ".mka"}
)
PROBE_MAX_PACKETS = 64
"""How far into a file we look for one decodable audio frame before giving up."""
MAX_QUEUE = 100

ACTIONS = frozenset({"play", "queue", "pause", "resume", "skip", "stop"})


# --- finding files safely ---------------------------------------------------


def _check_name(name: str) -> PurePosixPath:
    """Reject names that could leave the folder before touching the disk."""
    if not isinstance(name, str) or not name or len(name) > MAX_SOURCE_NAME_CHARS:
        raise BadMusicRequest("music source must be a non-empty file name")
    if "\x00" in name or "\\" in name:
        raise BadMusicRequest("music source contains forbidden characters")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise BadMusicRequest("music source must be relative to the music folder")
    rel = PurePosixPath(name)
    if any(part in ("..", "") for part in rel.parts) or rel.name in ("", "."):
        raise BadMusicRequest("music source may not leave the music folder")
    return rel


def _inside(folder: Path, rel: PurePosixPath | str, max_bytes: int) -> Path:
    """``folder / rel`` with symlinks resolved, checked to stay inside ``folder``."""
    root = folder.resolve()
    candidate = root / rel
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise MusicNotFound(f"no such music file: {rel}") from None
    except (OSError, RuntimeError):  # symlink loops land here
        raise BadMusicRequest(f"unreadable music source: {rel}") from None
    if not real.is_relative_to(root):
        raise BadMusicRequest("music source may not leave the music folder")
    if not real.is_file():
        raise MusicNotFound(f"no such music file: {rel}")
    size = real.stat().st_size
    if size > max_bytes:
        raise MusicTooLarge(f"music file is {size} bytes, the limit is {max_bytes}")
    return real


def resolve_source(
    source: str, music_dir: Path | None, upload_dir: Path | None, max_bytes: int
) -> Path:
    """The file behind a ``play``/``queue`` source: an upload id or a music-folder name.

    Does not decode; call ``probe_audio`` (in a thread) to check it is audio.
    """
    if isinstance(source, str) and UPLOAD_ID_RE.match(source):
        if upload_dir is None or not upload_dir.is_dir():
            raise MusicNotFound(f"no such upload: {source}")
        matches = sorted(p.name for p in upload_dir.glob(source + ".*"))
        if not matches:
            raise MusicNotFound(f"no such upload: {source}")
        return _inside(upload_dir, matches[0], max_bytes)
    rel = _check_name(source)
    if music_dir is None:
        raise MusicNotFound("this server has no music folder; upload a file instead")
    return _inside(music_dir, rel, max_bytes)


def probe_audio(path: Path) -> float:
    """Check that ``path`` decodes as audio; returns its duration in seconds (0 if unknown).

    Blocking (file I/O and decoding): run it with ``asyncio.to_thread``.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise BadMusicRequest(f"not an audio file: {path.name}")
            stream = container.streams.audio[0]
            for count, packet in enumerate(container.demux(stream)):
                if packet.size and packet.decode():
                    duration = (container.duration or 0) / av.time_base
                    return float(duration)
                if count >= PROBE_MAX_PACKETS:
                    break
    except BadMusicRequest:
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise BadMusicRequest(f"not an audio file: {path.name}") from exc
    raise BadMusicRequest(f"not an audio file: {path.name}")


def upload_id(data: bytes) -> str:
    """An upload's source id: derived from its content (the same file is one upload)."""
    return "up-" + hashlib.sha256(data).hexdigest()[:24]


def upload_ext(filename: str) -> str:
    """The extension an upload is kept under: its own if it names audio, else ``.bin``."""
    ext = PurePosixPath(filename or "").suffix.lower()
    return ext if ext in AUDIO_EXTENSIONS else ".bin"


def has_upload(upload_dir: Path, source_id: str) -> bool:
    return upload_dir.is_dir() and any(upload_dir.glob(source_id + ".*"))


def cache_upload(upload_dir: Path, source_id: str, ext: str, data: bytes) -> None:
    """Write an upload this node did not receive (checked when it was uploaded) to its folder.

    Blocking: run it with ``asyncio.to_thread``. Written under a temporary
    name and renamed, so a reader never sees half a file.
    """
    if not UPLOAD_ID_RE.match(source_id) or ext != upload_ext("x" + ext):
        raise BadMusicRequest(f"not an upload: {source_id}{ext}")
    upload_dir.mkdir(parents=True, exist_ok=True)
    tmp = upload_dir / f".tmp-{secrets.token_hex(8)}{ext}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, upload_dir / f"{source_id}{ext}")
    finally:
        tmp.unlink(missing_ok=True)


def save_upload(upload_dir: Path, filename: str, data: bytes, max_bytes: int) -> str:
    """Store an uploaded music file after checking it decodes; returns its source id.

    The id is derived from the content, so the same file uploaded twice is
    stored once. Blocking: run it with ``asyncio.to_thread``.
    """
    if len(data) > max_bytes:
        raise MusicTooLarge(f"upload is {len(data)} bytes, the limit is {max_bytes}")
    if not data:
        raise BadMusicRequest("empty upload")
    ext = upload_ext(filename)
    upload_dir.mkdir(parents=True, exist_ok=True)
    source_id = upload_id(data)
    final = upload_dir / f"{source_id}{ext}"
    if has_upload(upload_dir, source_id):
        return source_id
    tmp = upload_dir / f".tmp-{secrets.token_hex(8)}{ext}"
    try:
        tmp.write_bytes(data)
        probe_audio(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("stored upload %s (%d bytes)", final.name, len(data))
    return source_id


# --- decoding ---------------------------------------------------------------


class FileDecoder:
    """A file as 48 kHz mono int16 frames of 20 ms, decoded lazily.

    Decoding one frame's worth of a compressed file costs tens of
    microseconds, so the room's tick pulls frames directly; only opening the
    file is done in a thread.
    """

    def __init__(self, path: Path) -> None:
        self._container = av.open(str(path))
        self._stream = self._container.streams.audio[0]
        self._frames = self._container.decode(self._stream)
        self._resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)
        self._buffer = np.zeros(0, dtype=np.int16)
        self._eof = False

    def _fill(self) -> None:
        chunks = [self._buffer]
        have = self._buffer.shape[0]
        while have < FRAME_SAMPLES and not self._eof:
            try:
                frame = next(self._frames)
                out = self._resampler.resample(frame)
            except StopIteration:
                self._eof = True
                out = self._resampler.resample(None)
            except (av.FFmpegError, ValueError) as exc:
                logger.warning("music decode error, ending track: %s", exc)
                self._eof = True
                out = []
            for o in out:
                arr = o.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                chunks.append(arr)
                have += arr.shape[0]
        self._buffer = np.concatenate(chunks) if len(chunks) > 1 else self._buffer

    def next_frame(self) -> Pcm | None:
        """The next 960 samples (the last one zero-padded), or None at the end."""
        if self._buffer.shape[0] < FRAME_SAMPLES:
            self._fill()
        if self._buffer.shape[0] == 0:
            return None
        frame = self._buffer[:FRAME_SAMPLES]
        self._buffer = self._buffer[FRAME_SAMPLES:]
        if frame.shape[0] < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - frame.shape[0], np.int16)])
        return frame

    def close(self) -> None:
        self._container.close()


# --- the queue (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Track:
    source: str
    by: str
    path: Path

    def wire(self) -> dict[str, Any]:
        return {"source": self.source, "by": self.by}


@dataclass
class MusicQueue:
    """play / queue / pause / resume / skip / stop, and what is current."""

    status: str = "stopped"  # "playing" | "paused" | "stopped"
    current: Track | None = None
    queue: list[Track] = field(default_factory=list)

    def play(self, track: Track) -> None:
        """Play ``track`` now, replacing the current one; the queue stays."""
        self.current = track
        self.status = "playing"

    def enqueue(self, track: Track) -> None:
        if self.current is None:
            self.play(track)
            return
        if len(self.queue) >= MAX_QUEUE:
            raise BadMusicRequest(f"the queue is full ({MAX_QUEUE} tracks)")
        self.queue.append(track)

    def pause(self) -> None:
        if self.status != "playing":
            raise BadMusicRequest("nothing is playing")
        self.status = "paused"

    def resume(self) -> None:
        if self.status != "paused":
            raise BadMusicRequest("music is not paused")
        self.status = "playing"

    def skip(self) -> None:
        """Next in the queue (keeping paused/playing), or stop when it is empty."""
        if self.current is None:
            raise BadMusicRequest("nothing to skip")
        self.advance()

    def advance(self) -> None:
        if self.queue:
            self.current = self.queue.pop(0)
            if self.status == "stopped":
                self.status = "playing"
        else:
            self.stop()

    def stop(self) -> None:
        self.current = None
        self.queue.clear()
        self.status = "stopped"

    def state(self) -> dict[str, Any]:
        return {
            "type": "music_state",
            "status": self.status,
            "current": self.current.wire() if self.current else None,
            "queue": [t.wire() for t in self.queue],
        }


# --- the player (queue + decoder + fades) -------------------------------------


@dataclass
class MusicPlayer:
    """What the room's tick pulls music frames from.

    ``open_decoder`` is injectable so tests can feed synthetic audio.
    ``changed`` is set whenever the wire state changed; the room reads and
    clears it with ``take_changed``. Whether music is allowed at all is not
    the player's business: the room asks its controls and stops the player.
    """

    open_decoder: Callable[[Path], FileDecoder] = FileDecoder
    queue: MusicQueue = field(default_factory=MusicQueue)
    changed: bool = False
    _decoder: FileDecoder | None = None
    _decoder_track: Track | None = None
    _fade_in: bool = False
    _gapless: bool = False
    _tail: Pcm | None = None

    def _close_decoder(self, fade_out: bool) -> None:
        if self._decoder is None:
            return
        if fade_out and self.queue.status == "playing" and self._tail is None:
            last = self._decoder.next_frame()
            if last is not None:
                self._tail = fade(last, 1.0, 0.0)
        self._decoder.close()
        self._decoder = None
        self._decoder_track = None

    def apply(self, action: str, track: Track | None = None) -> None:
        """Apply a validated action (``track`` for play/queue)."""
        q = self.queue
        was_playing = q.status == "playing"
        if action in ("play", "queue") and track is None:
            raise BadMusicRequest(f"music {action} needs a source")
        if action == "play":
            assert track is not None
            self._close_decoder(fade_out=True)
            q.play(track)
        elif action == "queue":
            assert track is not None
            q.enqueue(track)
        elif action == "pause":
            q.pause()
            if self._decoder is not None:
                last = self._decoder.next_frame()
                if last is not None:
                    self._tail = fade(last, 1.0, 0.0)
        elif action == "resume":
            q.resume()
            self._fade_in = True
        elif action == "skip":
            if q.current is None:
                raise BadMusicRequest("nothing to skip")
            self._close_decoder(fade_out=was_playing)
            q.skip()
        elif action == "stop":
            self._close_decoder(fade_out=was_playing)
            q.stop()
        else:
            raise BadMusicRequest(f"unknown music action: {action!r}")
        self.changed = True

    def take_changed(self) -> bool:
        """Has the wire state changed since the last call? (The room then broadcasts it.)"""
        changed, self.changed = self.changed, False
        return changed

    def next_frame(self) -> Pcm | None:
        """This tick's music frame, or None when silent."""
        if self._tail is not None:
            tail, self._tail = self._tail, None
            return tail
        q = self.queue
        if q.status != "playing" or q.current is None:
            return None
        for _ in range(MAX_QUEUE + 1):  # skip unreadable tracks without looping forever
            if q.current is None:
                return None
            if self._decoder is None or self._decoder_track is not q.current:
                self._close_decoder(fade_out=False)
                try:
                    self._decoder = self.open_decoder(q.current.path)
                    self._decoder_track = q.current
                    # a song that follows another plays as recorded (gapless);
                    # one started by play/skip/resume fades in
                    self._fade_in = not self._gapless
                    self._gapless = False
                except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
                    logger.warning("cannot open %s: %s", q.current.source, exc)
                    q.advance()
                    self.changed = True
                    continue
            frame = self._decoder.next_frame()
            if frame is not None:
                if self._fade_in:
                    self._fade_in = False
                    frame = fade(frame, 0.0, 1.0)
                return frame
            self._close_decoder(fade_out=False)  # end of track
            q.advance()
            self._gapless = True
            self.changed = True
        return None

    def close(self) -> None:
        self._close_decoder(fade_out=False)
