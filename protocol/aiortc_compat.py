"""Every reach into aiortc's and aioice's private parts, in this one module.

Two patches, installed once per process by ``install()`` (the server's
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

``take_rtp`` (per receiver)
    aiortc's audio ``JitterBuffer`` (the receiver's private
    ``__jitter_buffer``) waits for four later packets before it releases a
    frame (80 ms) and stalls on a loss until 16 more arrive, then decodes in a
    thread. ``take_rtp`` swaps it for one that hands every packet (as an
    ``InboundRtp``: sequence number, RTP timestamp, payload type, payload),
    with its codec (from the receiver's private ``__codecs``), to a callback
    on the event loop, after aiortc's SRTP, RTCP statistics and RTX
    unwrapping, and gives aiortc's decoder nothing.

``accept_red`` (process-wide, called by ``install``)
    aiortc's audio codec table (``aiortc.codecs.CODECS``) has no RED (RFC
    2198), so an offer's ``red/48000/2`` (Chrome offers it after Opus) is
    dropped from the answer. ``install`` appends ``RED_CODEC`` to that table:
    the answer then accepts RED when offered, and ``take_rtp`` hands RED
    packets to the sink with ``audio/red``. aiortc sends with the first
    codec the offer lists; browsers list Opus first.

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

import ipaddress
import logging
from collections.abc import Callable, Sequence
from types import FunctionType
from typing import NamedTuple

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

RED_MIME = "audio/red"
RED_CODEC = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48_000, channels=2,
                                  payloadType=63)
"""RFC 2198 redundancy around Opus, as Chrome offers it (its PT is taken from the offer)."""

chosen_host_addresses: tuple[str, ...] = ()
"""The host candidates aioice offers; () = aioice's own choice (all but loopback).

Set it with ``set_host_addresses``; tests may ``monkeypatch.setattr`` it.
"""

class InboundRtp(NamedTuple):
    """One received RTP packet, as the receive path needs it (no aiortc types)."""

    sequence_number: int
    timestamp: int
    """RTP timestamp (48 kHz for Opus and RED)."""
    payload_type: int
    payload: bytes


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
    logger.debug("aiortc/aioice patches installed")


def installed() -> bool:
    return getattr(aioice.ice, "get_host_addresses", None) is _host_addresses


def uninstall() -> None:
    """Put aioice's function back (for tests of ``install`` itself)."""
    aioice.ice.get_host_addresses = _AIOICE_GET_HOST_ADDRESSES


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
        self._sink(InboundRtp(packet.sequence_number, packet.timestamp, packet.payload_type,
                              packet.payload), mime)
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
