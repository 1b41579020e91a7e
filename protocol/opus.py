"""A small ctypes binding to libopus: run-time encoder controls, FEC and PLC decode.

PyAV's Opus codec covers plain encode/decode but hides what real networks need:
``opus_encoder_ctl`` at run time (in-band FEC, expected loss, bitrate, DTX
without reopening the encoder and losing its state), decoding a lost frame
from the next packet's FEC data (``opus_decode`` with ``decode_fec=1``) and
packet loss concealment (``opus_decode`` with no data). This module binds
those few calls directly.

Which libopus: PyAV's manylinux wheel bundles one (``site-packages/av.libs/
libopus-<hash>.so.0.x``; libopus 1.6.1 in the wheel installed here) and it
exports the whole ``opus_*`` API, so Disco needs no system package;
``ctypes.util.find_library("opus")`` (Debian ``libopus0``) is the fallback,
and ``OpusUnavailable`` says plainly when neither is there. That reach into
PyAV's install layout lives here and nowhere else. ``opuslib-next`` was the
other option; it needs a system libopus anyway and its ctl wrappers are the
same ctypes calls as here.

Only mono 48 kHz int16 is supported: that is what the room mixes and hears.
Not thread-safe per object (libopus states are not); one encoder or decoder
per stream, as libopus requires.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 48_000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 960
MAX_FRAME_SAMPLES = SAMPLE_RATE_HZ * 120 // 1000  # 5760: the longest Opus packet, 120 ms
MAX_PACKET_BYTES = 1_500
"""Output buffer for one encoded packet: more than any voice frame needs (~200 B at 64 kbps)."""

MIN_BITRATE_BPS = 6_000
MAX_BITRATE_BPS = 510_000

# libopus constants (opus_defines.h).
OPUS_OK = 0
APPLICATION_VOIP = 2048
APPLICATION_AUDIO = 2049
APPLICATION_RESTRICTED_LOWDELAY = 2051
SIGNAL_VOICE = 3001
_SET_BITRATE = 4002
_GET_BITRATE = 4003
_SET_COMPLEXITY = 4010
_GET_COMPLEXITY = 4011
_SET_INBAND_FEC = 4012
_GET_INBAND_FEC = 4013
_SET_PACKET_LOSS_PERC = 4014
_GET_PACKET_LOSS_PERC = 4015
_SET_DTX = 4016
_GET_DTX = 4017
_SET_SIGNAL = 4024
_GET_LAST_PACKET_DURATION = 4039

Pcm = npt.NDArray[np.int16]


class OpusError(Exception):
    """libopus refused something (bad argument, corrupt packet) or is missing."""


class OpusUnavailable(OpusError):
    """No libopus could be loaded."""


def _candidates() -> list[str]:
    """Where libopus may be: PyAV's bundled copy first, then the system's."""
    paths: list[str] = []
    try:
        import av  # PyAV: its manylinux wheel ships libopus in ``av.libs/``

        site = os.path.dirname(os.path.dirname(os.path.abspath(av.__file__)))
        paths += sorted(glob.glob(os.path.join(site, "av.libs", "libopus*.so*")))
        paths += sorted(glob.glob(os.path.join(site, "av", ".dylibs", "libopus*.dylib")))
    except ImportError:  # pragma: no cover - PyAV is a dependency
        pass
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


@functools.cache
def _lib() -> ctypes.CDLL:
    tried = _candidates()
    for path in tried:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "opus_encoder_ctl") and hasattr(lib, "opus_decode"):
            _declare(lib)
            return lib
    raise OpusUnavailable(
        "libopus not found: looked in PyAV's av.libs/ and for a system libopus "
        f"(tried {tried or 'nothing'}); install PyAV's manylinux wheel or Debian libopus0"
    )


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_destroy.restype = None
    # PCM goes in as a plain address (an int from numpy): building a ctypes
    # pointer object per call costs more than the call itself.
    lib.opus_encode.argtypes = [c_void_p, c_void_p, c_int, c_char_p, ctypes.c_int32]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = [c_void_p, c_char_p, ctypes.c_int32, c_void_p, c_int, c_int]
    lib.opus_decode.restype = c_int
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = c_char_p
    lib.opus_packet_get_nb_samples.argtypes = [c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = c_int
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
        lib.opus_packet_has_lbrr.argtypes = [c_char_p, ctypes.c_int32]
        lib.opus_packet_has_lbrr.restype = c_int
    # opus_encoder_ctl / opus_decoder_ctl are variadic: leave argtypes unset and
    # pass ctypes-typed arguments explicitly on every call.
    lib.opus_encoder_ctl.restype = c_int
    lib.opus_decoder_ctl.restype = c_int


def _check(code: int, what: str) -> int:
    if code < 0:
        message = _lib().opus_strerror(code).decode(errors="replace")
        raise OpusError(f"{what}: {message} ({code})")
    return code


def version() -> str:
    """The loaded libopus's version string, e.g. ``libopus 1.5.2``."""
    return str(_lib().opus_get_version_string().decode())


SILENCE_SETTLE_FRAMES = 4
"""Frames of digital silence after which a fresh encoder's packet stops changing."""


@functools.cache
def silence_packet(bitrate_bps: int) -> bytes:
    """The packet an ``Encoder(bitrate_bps)`` settles on for digital silence (34 bytes at
    32 kbps): what a mixer can send in place of encoding a silent mix, ~0.4 ms each.
    A decoder plays it as silence from its second frame (the first ends the last sound)."""
    enc = Encoder(bitrate_bps)
    try:
        zeros = np.zeros(FRAME_SAMPLES, np.int16)
        packets = [enc.encode(zeros) for _ in range(SILENCE_SETTLE_FRAMES)]
    finally:
        enc.close()
    return packets[-1]


def packet_samples(payload: bytes) -> int:
    """Samples per channel at 48 kHz in one Opus packet (raises OpusError if corrupt)."""
    if not payload:
        raise OpusError("empty Opus packet")
    return _check(_lib().opus_packet_get_nb_samples(payload, len(payload), SAMPLE_RATE_HZ),
                  "opus_packet_get_nb_samples")


def packet_has_fec(payload: bytes) -> bool:
    """Whether the packet carries in-band FEC (LBRR) for the frame before it.

    False when the library is older than 1.5 (no way to tell): the caller then
    just tries ``decode_fec``, which falls back to PLC inside libopus.
    """
    lib = _lib()
    if not payload or not hasattr(lib, "opus_packet_has_lbrr"):
        return False
    return int(lib.opus_packet_has_lbrr(payload, len(payload))) > 0


def _pcm_in(pcm: Any) -> Pcm:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise OpusError(f"PCM must be int16, got {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.shape[0] != FRAME_SAMPLES:
        raise OpusError(f"a frame is {FRAME_SAMPLES} mono samples (20 ms), got {arr.shape[0]}")
    return np.ascontiguousarray(arr)


class _LibopusState:
    """Owns one libopus state pointer: freed once, by ``close`` or when collected."""

    _DESTROY = ""
    """The libopus function that frees this kind of state."""
    _state: int | None

    def close(self) -> None:
        if self._state is not None:
            getattr(_lib(), self._DESTROY)(ctypes.c_void_p(self._state))
            self._state = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


@dataclass(frozen=True)
class EncoderState:
    """An encoder's live settings, as libopus reports them."""

    bitrate_bps: int
    fec: bool
    packet_loss_perc: int
    dtx: bool
    complexity: int


class Encoder(_LibopusState):
    """Mono 48 kHz Opus encoder, 20 ms int16 frames in, one packet out.

    Every ``set_*`` is an ``opus_encoder_ctl`` on the live encoder: no reset,
    the next packet just uses the new setting (libopus applies bitrate, FEC and
    loss expectations frame by frame).
    """

    _DESTROY = "opus_encoder_destroy"

    def __init__(self, bitrate_bps: int = 32_000, *, application: int = APPLICATION_VOIP,
                 complexity: int = 10, fec: bool = False, packet_loss_perc: int = 0,
                 dtx: bool = False) -> None:
        lib = _lib()
        err = ctypes.c_int(0)
        state = lib.opus_encoder_create(SAMPLE_RATE_HZ, CHANNELS, application, ctypes.byref(err))
        _check(err.value, "opus_encoder_create")
        if not state:
            raise OpusError("opus_encoder_create returned no encoder")
        self._state: int | None = state
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self.set_bitrate(bitrate_bps)
        self.set_complexity(complexity)
        self.set_fec(fec)
        self.set_packet_loss_perc(packet_loss_perc)
        self.set_dtx(dtx)
        self._ctl(_SET_SIGNAL, SIGNAL_VOICE if application == APPLICATION_VOIP else -1000)

    def _ctl(self, request: int, value: int) -> None:
        if self._state is None:
            raise OpusError("encoder is closed")
        _check(_lib().opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(request),
                                       ctypes.c_int32(value)), f"opus_encoder_ctl({request})")

    def _get(self, request: int) -> int:
        if self._state is None:
            raise OpusError("encoder is closed")
        out = ctypes.c_int32(0)
        _check(_lib().opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(request),
                                       ctypes.byref(out)), f"opus_encoder_ctl({request})")
        return int(out.value)

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one 960-sample int16 frame; returns the packet (1-2 bytes in DTX)."""
        frame = _pcm_in(pcm)
        if self._state is None:
            raise OpusError("encoder is closed")
        n = _lib().opus_encode(self._state, frame.ctypes.data, FRAME_SAMPLES, self._out,
                               MAX_PACKET_BYTES)
        return self._out.raw[: _check(n, "opus_encode")]

    def set_bitrate(self, bitrate_bps: int) -> None:
        self._set_within(_SET_BITRATE, bitrate_bps, MIN_BITRATE_BPS, MAX_BITRATE_BPS, "bitrate")

    def set_fec(self, on: bool) -> None:
        """In-band FEC (LBRR): each packet also carries a coarse copy of the one before."""
        self._ctl(_SET_INBAND_FEC, 1 if on else 0)

    def set_packet_loss_perc(self, percent: int) -> None:
        """Expected loss, 0..100 %: how much bitrate FEC gets (needs FEC on to matter)."""
        self._set_within(_SET_PACKET_LOSS_PERC, percent, 0, 100, "packet loss %")

    def set_dtx(self, on: bool) -> None:
        self._ctl(_SET_DTX, 1 if on else 0)

    def set_complexity(self, complexity: int) -> None:
        self._set_within(_SET_COMPLEXITY, complexity, 0, 10, "complexity")

    def _set_within(self, request: int, value: int, low: int, high: int, what: str) -> None:
        if not low <= value <= high:
            raise OpusError(f"{what} must be {low}..{high}, got {value}")
        self._ctl(request, value)

    def state(self) -> EncoderState:
        """The settings libopus reports now (read back by ctl, not remembered here)."""
        return EncoderState(
            bitrate_bps=self._get(_GET_BITRATE), fec=self._get(_GET_INBAND_FEC) != 0,
            packet_loss_perc=self._get(_GET_PACKET_LOSS_PERC), dtx=self._get(_GET_DTX) != 0,
            complexity=self._get(_GET_COMPLEXITY),
        )



class Decoder(_LibopusState):
    """Mono 48 kHz Opus decoder with FEC recovery and concealment.

    For a lost packet followed by one that arrived: ``decode_fec(next)`` gives
    the lost frame (from ``next``'s LBRR data, or PLC if it has none), then
    ``decode(next)`` as usual. For a loss with nothing after it yet:
    ``conceal()``. Stereo streams are downmixed by libopus.
    """

    _DESTROY = "opus_decoder_destroy"

    def __init__(self) -> None:
        lib = _lib()
        err = ctypes.c_int(0)
        state = lib.opus_decoder_create(SAMPLE_RATE_HZ, CHANNELS, ctypes.byref(err))
        _check(err.value, "opus_decoder_create")
        if not state:
            raise OpusError("opus_decoder_create returned no decoder")
        self._state: int | None = state
        self._pcm = np.zeros(MAX_FRAME_SAMPLES, dtype=np.int16)
        self._pcm_addr = self._pcm.ctypes.data

    def _decode(self, data: bytes | None, frame_samples: int, fec: int) -> Pcm:
        if self._state is None:
            raise OpusError("decoder is closed")
        n = _lib().opus_decode(self._state, data, len(data) if data else 0, self._pcm_addr,
                               frame_samples, fec)
        return self._pcm[: _check(n, "opus_decode")].copy()

    def decode(self, payload: bytes) -> Pcm:
        """One packet to PCM (960 samples for a 20 ms packet); OpusError if corrupt."""
        if not payload:
            raise OpusError("empty Opus packet (use conceal() for a missing one)")
        return self._decode(bytes(payload), MAX_FRAME_SAMPLES, 0)

    def decode_fec(self, next_payload: bytes, frame_samples: int = FRAME_SAMPLES) -> Pcm:
        """The lost frame before ``next_payload``, rebuilt from its in-band FEC.

        Call ``decode(next_payload)`` afterwards for the next frame itself. If
        the packet carries no FEC, libopus conceals instead (same length).
        """
        if not next_payload:
            raise OpusError("empty Opus packet")
        return self._decode(bytes(next_payload), frame_samples, 1)

    def conceal(self, frame_samples: int = FRAME_SAMPLES) -> Pcm:
        """PLC: one frame continuing the last decoded audio (fades out over a long gap)."""
        return self._decode(None, frame_samples, 0)

