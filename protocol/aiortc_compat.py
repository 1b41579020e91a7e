"""Every reach into aiortc's and aioice's private parts, in this one module.

Three patches, installed once per process by ``install()`` (the server's
composition root, the desktop client's start, the tests' setup); it is
idempotent, and it raises ``CompatError`` at once if an installed aiortc or
aioice no longer has the private part a patch relies on, instead of warning
and quietly running without it:

``get_host_addresses``
    aioice gathers host candidates from the module-level function
    ``aioice.ice.get_host_addresses``, which lists every interface except
    127.0.0.1, and has no per-connection option. ``install`` replaces it with
    one that offers ``chosen_host_addresses`` when set (the server's
    ``DISCO_RTC_HOST_ADDRESSES``; 127.0.0.1 for a client of a loopback server,
    and in tests) and otherwise defers to aioice's own. Change the choice with
    ``set_host_addresses``; nothing re-patches aioice.

``asyncio`` in ``aioice.ice`` (the media port range)
    aioice binds every host candidate's UDP socket to port 0 (any port), with
    no option for a range. ``install`` gives ``aioice.ice`` a view of asyncio
    whose running loop binds those sockets inside ``chosen_port_range`` when
    one is set (``DISCO_RTC_PORT_MIN``/``_MAX``: the UDP ports an operator
    opens in a firewall), trying the range's ports from a random start; any
    other use of asyncio passes straight through. ``set_port_range`` chooses.

``take_rtp`` (per receiver)
    aiortc's audio ``JitterBuffer`` (the receiver's private
    ``__jitter_buffer``) waits for four later packets before it releases a
    frame (80 ms) and stalls on a loss until 16 more arrive, then decodes in a
    thread. ``take_rtp`` swaps it for one that hands every packet (as an
    ``InboundRtp``: sequence number, RTP timestamp, payload type, payload),
    with its codec (from the receiver's private ``__codecs``), to a callback
    on the event loop, after aiortc's SRTP, RTCP statistics and RTX
    unwrapping, and gives aiortc's decoder nothing. Each ``InboundRtp`` also
    carries the RFC 6464 audio level (``ssrc-audio-level``, which aiortc
    negotiates and parses; browsers and aiortc senders that encode send it),
    so the room can choose whom to decode without decoding everyone.

``accept_red`` (process-wide, called by ``install``)
    aiortc's audio codec table (``aiortc.codecs.CODECS``) has no RED (RFC
    2198), so an offer's ``red/48000/2`` (Chrome offers it after Opus) is
    dropped from the answer. ``install`` appends ``RED_CODEC`` to that table:
    the answer then accepts RED when offered, and ``take_rtp`` hands RED
    packets to the sink with ``audio/red``. aiortc sends with the first
    codec the offer lists; browsers list Opus first.

``send_audio_level`` (per sender)
    aiortc's ``RTCRtpSender`` puts the RFC 6464 level in a packet only when it
    encodes the frame itself; ``send_audio_level`` wraps one sender's private
    ``_next_encoded_frame`` so pre-encoded packets carry a level too (load
    clients and tests that send Opus they encoded, as browsers do with DTX).

``watch_receiver_reports`` (per sender)
    aiortc reads the receiver reports (RTCP RR/SR report blocks) that the far
    end sends about our stream in ``RTCRtpSender._handle_rtcp_packet`` and
    keeps them only for its async ``getStats``. ``watch_receiver_reports``
    wraps that method on one sender so each report block about its SSRC also
    goes, as a ``ReceiverReport`` (fraction lost, jitter, the sender's RTT
    estimate from its private ``__rtt``), to a callback on the event loop.

Two reads, for tests: ``nominated_local_candidate`` (which path ICE chose:
host or relay) and ``go_silent`` (close a peer's sockets with no goodbye, as
a phone leaving coverage does), both through the aioice ``Connection`` that
aiortc keeps privately under its ``RTCIceTransport``.

This module lives in ``protocol/`` because it is the one leaf package that the
server (``sfu``, ``signaling``) and the desktop client may both import: it
imports nothing but aiortc and aioice. ``tests/test_aiortc_compat.py`` has a
test per patch that fails if it stops taking; ``pyproject.toml`` pins aiortc
and aioice to the minor versions those tests ran on.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
from collections.abc import Callable, Sequence
from types import FunctionType
from typing import Any, NamedTuple

import aioice.ice
import aiortc.codecs
from aioice.candidate import Candidate
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket, RtpPacket

logger = logging.getLogger(__name__)

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_SENDER_RTT = "_RTCRtpSender__rtt"
_SENDER_SSRC = "_ssrc"
RTP_CLOCK_HZ = 48_000
"""The clock of the Opus (and RED) streams whose report jitter is converted to seconds."""
_CODECS = "_RTCRtpReceiver__codecs"
_AIOICE_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses

_AIOICE_ASYNCIO = aioice.ice.asyncio

RED_MIME = "audio/red"
RED_CODEC = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48_000, channels=2,
                                  payloadType=63)
"""RFC 2198 redundancy around Opus, as Chrome offers it (its PT is taken from the offer)."""

chosen_host_addresses: tuple[str, ...] = ()
"""The host candidates aioice offers; () = aioice's own choice (all but loopback).

Set it with ``set_host_addresses``; tests may ``monkeypatch.setattr`` it.
"""

chosen_port_range: tuple[int, int] | None = None
"""The UDP ports (first, last) host candidates bind within; None = any port (aioice's own).

Set it with ``set_port_range``.
"""


class InboundRtp(NamedTuple):
    """One received RTP packet, as the receive path needs it (no aiortc types)."""

    sequence_number: int
    timestamp: int
    """RTP timestamp (48 kHz for Opus and RED)."""
    payload_type: int
    payload: bytes
    audio_level: int | None = None
    """RFC 6464 level the sender measured, in -dBov (0 loudest .. 127 silence); None when
    the packet carries no ssrc-audio-level extension (not negotiated, or not sent)."""


RtpSink = Callable[[InboundRtp, str], None]
"""Called with each inbound RTP packet and its codec's lower-case MIME type."""


class CompatError(RuntimeError):
    """aiortc or aioice changed a private part a patch relies on: pin or update this module."""


# --- install -------------------------------------------------------------------------


def install() -> None:
    """Check every private part this module uses and patch aioice (idempotent).

    Raises ``CompatError`` naming what is missing: the server or client must
    not start with a patch that silently does nothing.
    """
    check_receiver_class(RTCRtpReceiver)
    accept_red()
    if installed():
        return
    check_aioice_gathering()
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.asyncio = _AsyncioInRange()  # type: ignore[assignment]
    logger.debug("aiortc/aioice patches installed")


def installed() -> bool:
    return getattr(aioice.ice, "get_host_addresses", None) is _host_addresses


def uninstall() -> None:
    """Put aioice's function and asyncio back (for tests of ``install`` itself)."""
    aioice.ice.get_host_addresses = _AIOICE_GET_HOST_ADDRESSES
    aioice.ice.asyncio = _AIOICE_ASYNCIO


def _code_names(fn: object) -> set[str]:
    code = getattr(fn, "__code__", None)
    return set(code.co_names) if code is not None else set()


def accept_red() -> None:
    """Put RED in aiortc's audio codec table, after its own codecs (idempotent)."""
    table = getattr(aiortc.codecs, "CODECS", None)
    audio = table.get("audio") if isinstance(table, dict) else None
    if not isinstance(audio, list) or not all(
        isinstance(c, RTCRtpCodecParameters) for c in audio
    ):
        raise CompatError(
            "aiortc.codecs.CODECS['audio'] is not a list of RTCRtpCodecParameters; RED "
            "cannot be negotiated (supported: aiortc 1.16.x)"
        )
    if not any(c.mimeType.lower() == RED_MIME for c in audio):
        audio.append(RED_CODEC)


def check_receiver_class(cls: type) -> None:
    """The receiver still sets and uses the two private attributes ``take_rtp`` relies on."""
    init_names = _code_names(getattr(cls, "__init__", None))
    handle_names = _code_names(getattr(cls, "_handle_rtp_packet", None))
    for attr in (_JITTER_BUFFER, _CODECS):
        if attr not in init_names or attr not in handle_names:
            raise CompatError(
                f"aiortc's RTCRtpReceiver no longer sets and uses {attr}; the inbound "
                "pass-through cannot be installed (supported: aiortc 1.16.x)"
            )
    if "add" not in handle_names:
        raise CompatError(
            "aiortc's RTCRtpReceiver._handle_rtp_packet no longer calls its jitter "
            "buffer's add(); the inbound pass-through cannot be installed"
        )


def check_aioice_gathering() -> None:
    """aioice still looks ``get_host_addresses`` up in ``aioice.ice`` when gathering."""
    current = getattr(aioice.ice, "get_host_addresses", None)
    gather = getattr(getattr(aioice.ice, "Connection", None), "gather_candidates", None)
    if not callable(current) or not isinstance(gather, FunctionType):
        raise CompatError(
            "aioice.ice has no get_host_addresses / Connection.gather_candidates; the "
            "host-address choice cannot be installed (supported: aioice 0.13.x)"
        )
    if "get_host_addresses" not in _code_names(gather) or gather.__globals__ is not vars(
        aioice.ice
    ):
        raise CompatError(
            "aioice's Connection.gather_candidates no longer calls aioice.ice."
            "get_host_addresses; replacing it would not change the host candidates"
        )
    binds = getattr(aioice.ice.Connection, "get_component_candidates", None)
    names = _code_names(binds)
    seen = getattr(aioice.ice, "asyncio", None)
    if (not isinstance(binds, FunctionType) or binds.__globals__ is not vars(aioice.ice)
            or not {"get_running_loop", "create_datagram_endpoint"} <= names
            or not (seen is asyncio or isinstance(seen, _AsyncioInRange))):
        raise CompatError(
            "aioice's Connection.get_component_candidates no longer binds host sockets "
            "through asyncio.get_running_loop().create_datagram_endpoint; the media port "
            "range cannot be installed (supported: aioice 0.13.x)"
        )


# --- host candidates -----------------------------------------------------------------


def set_host_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Offer exactly ``addresses`` as host candidates (process-wide); () = aioice's default.

    Returns the previous choice. Raises ``CompatError`` before ``install()``
    (the choice would be silently ignored) and ``ValueError`` for a bad address.
    """
    global chosen_host_addresses
    if not installed():
        raise CompatError("call aiortc_compat.install() before set_host_addresses()")
    chosen = tuple(str(ipaddress.ip_address(str(a).strip())) for a in addresses)
    previous, chosen_host_addresses = chosen_host_addresses, chosen
    if chosen:
        logger.info("ICE host candidates limited to %s", ", ".join(chosen))
    return previous


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = chosen_host_addresses
    if not chosen:
        return list(_AIOICE_GET_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [a for a in chosen if (use_ipv6 if ipaddress.ip_address(a).version == 6 else use_ipv4)]


# --- media port range ---------------------------------------------------------------------


def set_port_range(first: int | None, last: int | None) -> tuple[int, int] | None:
    """Bind host candidates within [first, last] (process-wide); None, None = any port.

    Returns the previous range. Raises ``CompatError`` before ``install()``
    and ``ValueError`` for a range that is not 1024..65535, first <= last.
    """
    global chosen_port_range
    if not installed():
        raise CompatError("call aiortc_compat.install() before set_port_range()")
    chosen: tuple[int, int] | None = None
    if first is not None or last is not None:
        if first is None or last is None or not 1024 <= first <= last <= 65535:
            raise ValueError(f"a UDP port range is 1024 <= first <= last <= 65535, "
                             f"got {first}..{last}")
        chosen = (first, last)
        logger.info("ICE host candidates bind UDP ports %d-%d", first, last)
    previous, chosen_port_range = chosen_port_range, chosen
    return previous


class _LoopInRange:
    """The running loop, but host sockets asked for port 0 bind inside the chosen range."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, protocol_factory: Any, local_addr: Any = None,
                                       **kwargs: Any) -> Any:
        span = chosen_port_range
        if span is None or local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, **kwargs)
        first, last = span
        count = last - first + 1
        start = random.randrange(count)
        for i in range(count):
            port = first + (start + i) % count
            try:
                return await self._loop.create_datagram_endpoint(
                    protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE,
                      f"every UDP port in {first}-{last} on {local_addr[0]} is in use")


class _AsyncioInRange:
    """``asyncio`` as ``aioice.ice`` sees it: the same, but for ``get_running_loop``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> Any:
        return _LoopInRange(asyncio.get_running_loop())


# --- inbound RTP -----------------------------------------------------------------------


class _Tap(JitterBuffer):
    """Hands each packet to the sink at once; aiortc's decoder thread gets nothing."""

    def __init__(self, codecs: dict[int, object], sink: RtpSink) -> None:
        super().__init__(capacity=16)
        self._codecs = codecs
        self._sink = sink

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        codec = self._codecs.get(packet.payload_type)
        mime = str(getattr(codec, "mimeType", "")).lower()
        level = packet.extensions.audio_level  # (voice activity, -dBov) or None
        self._sink(InboundRtp(packet.sequence_number, packet.timestamp, packet.payload_type,
                              packet.payload, None if level is None else int(level[1])), mime)
        return False, None


def take_rtp(receiver: RTCRtpReceiver, sink: RtpSink) -> None:
    """Route every RTP packet ``receiver`` accepts to ``sink`` instead of aiortc's decoder.

    Call it before the connection starts (right after setRemoteDescription).
    Raises ``CompatError`` if this receiver has no jitter buffer or codec
    table where aiortc 1.16 keeps them.
    """
    current = getattr(receiver, _JITTER_BUFFER, None)
    codecs = getattr(receiver, _CODECS, None)
    if not isinstance(current, JitterBuffer) or not isinstance(codecs, dict):
        raise CompatError(
            f"this RTCRtpReceiver has no {_JITTER_BUFFER} (JitterBuffer) or {_CODECS} (dict): "
            f"found {type(current).__name__} and {type(codecs).__name__}"
        )
    setattr(receiver, _JITTER_BUFFER, _Tap(codecs, sink))


def send_audio_level(sender: RTCRtpSender, level: Callable[[], int | None]) -> None:
    """Put ``level()`` (dBov, -127..0) in each packet ``sender`` sends, as RFC 6464 asks.

    aiortc adds the ssrc-audio-level extension only to frames it encodes itself
    (``RTCEncodedFrame.audio_level``, set in ``_next_encoded_frame``); a track
    that yields pre-encoded ``av.Packet``s sends none. This wraps that method on
    one sender: ``level`` is called right after the track's ``recv`` returned, so
    a track can say the level of the frame it just handed over. For senders that
    encode before aiortc (load clients, tests); browsers send the level themselves.
    Raises ``CompatError`` if the sender no longer has ``_next_encoded_frame``.
    """
    original = getattr(sender, "_next_encoded_frame", None)
    names = _code_names(getattr(type(sender), "_next_encoded_frame", None))
    if not callable(original) or "RTCEncodedFrame" not in names:
        raise CompatError(
            "aiortc's RTCRtpSender no longer builds RTCEncodedFrame in "
            "_next_encoded_frame; audio levels cannot be added (supported: aiortc 1.16.x)"
        )

    async def next_frame(codec: RTCRtpCodecParameters) -> Any:
        frame = await original(codec)
        if frame is not None and getattr(frame, "audio_level", None) is None:
            value = level()
            if value is not None:
                frame.audio_level = max(-127, min(0, int(value)))
        return frame

    setattr(sender, "_next_encoded_frame", next_frame)  # noqa: B010 (an instance attribute)


# --- RTCP receiver reports about our streams -------------------------------------------


class ReceiverReport(NamedTuple):
    """One RTCP report block the far end sent about the stream we send it."""

    fraction_lost: int
    """Share of our packets lost since its previous report, in 1/256 (RFC 3550)."""
    jitter_s: float
    """Its interarrival jitter estimate, in seconds."""
    rtt_s: float | None
    """aiortc's round-trip estimate (from the reports' LSR/DLSR); None until known."""


ReportSink = Callable[[ReceiverReport], None]


def watch_receiver_reports(sender: RTCRtpSender, sink: ReportSink) -> None:
    """Hand each receiver report block about ``sender``'s stream to ``sink`` as it arrives.

    Raises ``CompatError`` if the sender no longer handles RTCP in
    ``_handle_rtcp_packet`` (a coroutine method) or has no ``_ssrc``.
    """
    original = getattr(sender, "_handle_rtcp_packet", None)
    handle_names = _code_names(getattr(type(sender), "_handle_rtcp_packet", None))
    if (not callable(original) or not isinstance(getattr(sender, _SENDER_SSRC, None), int)
            or _SENDER_RTT not in handle_names):
        raise CompatError(
            "aiortc's RTCRtpSender no longer handles receiver reports in "
            "_handle_rtcp_packet (with _ssrc and __rtt); loss reports cannot be read "
            "(supported: aiortc 1.16.x)"
        )

    async def handle(packet: object) -> None:
        await original(packet)
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            ssrc = getattr(sender, _SENDER_SSRC)
            for block in packet.reports:
                if block.ssrc == ssrc:
                    rtt = getattr(sender, _SENDER_RTT, None)
                    sink(ReceiverReport(int(block.fraction_lost), block.jitter / RTP_CLOCK_HZ,
                                        float(rtt) if rtt is not None else None))

    setattr(sender, "_handle_rtcp_packet", handle)  # noqa: B010 (an instance attribute)


# --- ICE internals (for tests) ------------------------------------------------------------


def ice_connection(transport: RTCIceTransport) -> aioice.ice.Connection:
    """The aioice connection aiortc keeps under ``transport`` (its private ``_connection``)."""
    connection = getattr(transport, "_connection", None)
    if not isinstance(connection, aioice.ice.Connection):
        raise CompatError(
            f"RTCIceTransport has no aioice Connection in _connection: found "
            f"{type(connection).__name__}"
        )
    return connection


def nominated_local_candidate(transport: RTCIceTransport, component: int = 1) -> Candidate | None:
    """Our side of the candidate pair ICE nominated (None before it has)."""
    nominated = getattr(ice_connection(transport), "_nominated", None)
    if not isinstance(nominated, dict):
        raise CompatError("aioice's Connection has no _nominated pairs (dict)")
    pair = nominated.get(component)
    return None if pair is None else pair.local_candidate


def go_silent(transport: RTCIceTransport) -> None:
    """Close ``transport``'s UDP sockets with no DTLS close or RTCP BYE: a vanished peer."""
    connection = ice_connection(transport)
    protocols = getattr(connection, "_protocols", None)
    if not isinstance(protocols, list):
        raise CompatError("aioice's Connection has no _protocols (list)")

    async def drop(data: bytes) -> None:
        return None

    setattr(connection, "send", drop)  # noqa: B010 (an instance attribute over a method)
    for protocol in list(protocols):
        udp = getattr(protocol, "transport", None)
        if udp is not None:
            udp.close()
