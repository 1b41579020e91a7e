"""Every reach into aiortc's and aioice's private parts, in this one module.

The patches below are installed once per process by ``install()`` (the server's
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

``StunProtocol.datagram_received`` (the RTP demux, process-wide)
    aioice's host socket protocol tries ``stun.parse_message`` on every
    datagram and hands it on to the connection only when that raises: per RTP
    packet a struct unpack and an exception (~0.7 us here, before any media
    work). ``install`` puts a demux in front of it, as RFC 7983 does it: a
    first byte of 128-191 is RTP or RTCP (STUN starts with 0-3), handed to the
    connection's ``data_received`` at once; everything else goes aioice's way.

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

    The receive path (with ``counters``, the sink's view of its stream): after
    the first packet of an SSRC has come through aiortc, ``take_rtp`` routes
    that SSRC's SRTP datagrams from aioice's socket callback (the connection's
    ``data_received``, an instance attribute over aioice's method) straight to
    the sink: unprotected with the DTLS transport's private ``_rx_srtp``
    session, parsed by ``protocol.rtp_parse`` (with the audio-level id from the
    transport's private header-extension map), no asyncio queue, no receive
    coroutines, no ``RtpPacket``, no per-packet statistics. STUN, DTLS, RTCP and
    unknown SSRCs still go aiortc's way. aiortc's per-SSRC statistics (the
    receiver's private ``__remote_streams``) are replaced by ones read from
    ``counters`` when a report is due, so RTCP receiver reports (and
    ``getStats``) keep their normal interval and say what the playout saw.

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

``take_sending`` (per sender; the "send path" section)
    aiortc sends each listener's RTP from a coroutine per sender. ``take_sending``
    hands the caller, when aiortc starts the sender after DTLS, a ``SendTarget``
    (negotiated codecs, the header extension block aiortc writes, the DTLS
    transport's private SRTP tx session's ``protect``, and ``sendto`` on the
    nominated pair's UDP transport, read through aioice's private
    ``_nominated``); the caller builds and sends RTP itself (``sfu.outbound``).
    aiortc's RTCP loop keeps sending sender reports: the sender's class becomes
    ``_CountedSender``, whose properties over aiortc's private SR counters
    (``__packet_count``, ``__octet_count``, ``__rtp_timestamp``,
    ``__ntp_timestamp``) read the caller's ``SendCounters``.

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
from dataclasses import dataclass
from types import FunctionType
from typing import Any, NamedTuple

import aioice.ice
import aiortc.codecs
import aiortc.rtp
import pylibsrtp
from aioice.candidate import Candidate
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensionsMap, RtcpRrPacket, RtcpSrPacket, RtpPacket

from protocol.rtp_parse import parse_rtp

logger = logging.getLogger(__name__)

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_SENDER_RTT = "_RTCRtpSender__rtt"
_SENDER_SSRC = "_ssrc"
RTP_CLOCK_HZ = 48_000
"""The clock of the Opus (and RED) streams whose report jitter is converted to seconds."""
_CODECS = "_RTCRtpReceiver__codecs"
_AIOICE_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses

_AIOICE_ASYNCIO = aioice.ice.asyncio
_AIOICE_DATAGRAM_RECEIVED = aioice.ice.StunProtocol.datagram_received

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
    check_sender_class(RTCRtpSender)
    accept_red()
    answer_offered_payload_types()
    if installed():
        return
    check_aioice_gathering()
    check_aioice_demux()
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.asyncio = _AsyncioInRange()  # type: ignore[assignment]
    aioice.ice.StunProtocol.datagram_received = _datagram_received  # type: ignore[method-assign]
    logger.debug("aiortc/aioice patches installed")


def installed() -> bool:
    return getattr(aioice.ice, "get_host_addresses", None) is _host_addresses


def uninstall() -> None:
    """Put aioice's function and asyncio back (for tests of ``install`` itself)."""
    aioice.ice.get_host_addresses = _AIOICE_GET_HOST_ADDRESSES
    aioice.ice.asyncio = _AIOICE_ASYNCIO
    aioice.ice.StunProtocol.datagram_received = (  # type: ignore[method-assign]
        _AIOICE_DATAGRAM_RECEIVED)


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


def check_aioice_demux() -> None:
    """aioice's host socket protocol still parses STUN first, then hands the rest on."""
    names = _code_names(_AIOICE_DATAGRAM_RECEIVED)
    if not {"parse_message", "receiver", "data_received", "local_candidate"} <= names:
        raise CompatError(
            "aioice's StunProtocol.datagram_received no longer hands what is not STUN to "
            "receiver.data_received; the RTP demux cannot be installed (supported: aioice "
            "0.13.x)"
        )


def _datagram_received(self: aioice.ice.StunProtocol, data: bytes | str,
                       addr: tuple[Any, ...]) -> None:
    """RFC 7983's demux before aioice's STUN parse: RTP and RTCP (first byte 128-191)
    go straight to the connection, as aioice hands on what fails to parse as STUN."""
    if isinstance(data, bytes) and data and 127 < data[0] < 192:
        self.receiver.data_received(data, self.local_candidate.component)
        return
    _AIOICE_DATAGRAM_RECEIVED(self, data, addr)


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


# --- receive path -----------------------------------------------------------------------
#
# Every reach for the inbound side, together: the tap that replaces aiortc's jitter
# buffer (``take_rtp``), the fast path that hands SRTP datagrams from aioice straight
# to it, and the receiver-report statistics computed from the sink's counters.

_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"
_EXT_IDS = "_HeaderExtensionsMap__ids"
_FAST_PATH = "_disco_fast_path"
"""Where the fast path hangs on the aioice connection (one per bundled transport)."""


class ReceiveCounters(NamedTuple):
    """What the sink knows about one inbound stream, cumulative (for RTCP reports)."""

    received: int
    """Packets that arrived."""
    expected: int
    """Packets whose turn came (played, or lost)."""
    lost: int
    """Of ``expected``, how many never arrived in time."""
    highest_seq: int
    """The highest sequence number received, extended with its wrap count."""
    jitter_s: float
    """RFC 3550 interarrival jitter, in seconds."""


CountersSource = Callable[[], ReceiveCounters]


class _CounterStats:
    """Stands in for aiortc's per-SSRC ``StreamStatistics`` in a receiver.

    aiortc updates those per packet in Python and reads them once a report
    (``RTCRtpReceiver._run_rtcp``, every 0.5-1.5 s) and in ``getStats``. These
    are read from the sink's counters when asked: no per-packet work, and the
    reports say what the playout buffer saw (losses after reordering).
    """

    def __init__(self, source: CountersSource, clock_rate: int) -> None:
        self._source = source
        self._clock_rate = clock_rate
        self._base = (0, 0)

    def add(self, packet: object) -> None:
        """aiortc's per-packet update (slow-path packets): the sink counts them."""

    @property
    def packets_received(self) -> int:
        return self._source().received

    @property
    def packets_lost(self) -> int:
        return max(-(1 << 23), min((1 << 23) - 1, self._source().lost))

    @property
    def max_seq(self) -> int:
        return self._source().highest_seq & 0xFFFF_FFFF

    @property
    def jitter(self) -> int:
        return int(self._source().jitter_s * self._clock_rate)

    @property
    def fraction_lost(self) -> int:
        """Lost share since the previous report, in 1/256 (read once per report)."""
        c = self._source()
        expected, lost = c.expected - self._base[0], c.lost - self._base[1]
        self._base = (c.expected, c.lost)
        return 0 if expected <= 0 or lost <= 0 else min(255, (lost << 8) // expected)


class _Tap(JitterBuffer):
    """Hands each packet to the sink at once; aiortc's decoder thread gets nothing.

    With ``counters``, the first packet of each SSRC (which came through
    aiortc) also routes that SSRC onto the fast path and swaps the receiver's
    statistics for ``_CounterStats``.
    """

    def __init__(self, codecs: dict[int, object], sink: RtpSink, *,
                 receiver: RTCRtpReceiver | None = None,
                 counters: CountersSource | None = None) -> None:
        super().__init__(capacity=16)
        self._codecs = codecs
        self._sink = sink
        self._receiver = receiver
        self._counters = counters
        self._routed: set[int] = set()
        self._level_id: int | None = None
        self._mimes: dict[int, str] = {}

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        mime = self._mime(packet.payload_type)
        level = packet.extensions.audio_level  # (voice activity, -dBov) or None
        self._sink(InboundRtp(packet.sequence_number, packet.timestamp, packet.payload_type,
                              packet.payload, None if level is None else int(level[1])), mime)
        if self._counters is not None and packet.ssrc not in self._routed:
            codec = self._codecs.get(packet.payload_type)
            self._route(packet.ssrc, int(getattr(codec, "clockRate", 0) or RTP_CLOCK_HZ))
        return False, None

    def _mime(self, payload_type: int) -> str:
        mime = self._mimes.get(payload_type)
        if mime is None:
            codec = self._codecs.get(payload_type)
            mime = self._mimes[payload_type] = str(getattr(codec, "mimeType", "")).lower()
        return mime

    def _route(self, ssrc: int, clock: int) -> None:
        self._routed.add(ssrc)
        receiver, counters = self._receiver, self._counters
        assert receiver is not None and counters is not None
        streams = getattr(receiver, _REMOTE_STREAMS, None)
        dtls = receiver.transport
        fast = getattr(_ice_connection_or_none(dtls), _FAST_PATH, None)
        if not isinstance(streams, dict) or not isinstance(fast, _FastPath):
            return  # checked at take_rtp: only a test's bare tap gets here
        streams[ssrc] = _CounterStats(counters, clock)
        ids = getattr(getattr(dtls, "_rtp_header_extensions_map", None), _EXT_IDS, None)
        self._level_id = getattr(ids, "audio_level", None)
        fast.routes[ssrc] = self

    def deliver(self, plain: bytes) -> None:
        """One unprotected RTP packet from the fast path (its SSRC is routed here)."""
        try:
            h = parse_rtp(plain, self._level_id)
        except ValueError:
            return  # as aiortc: a malformed packet is dropped
        if h.payload_type not in self._codecs:
            return  # as aiortc: an unknown payload type is dropped
        self._sink(InboundRtp(h.sequence_number, h.timestamp, h.payload_type, h.payload,
                              h.audio_level), self._mime(h.payload_type))


class _FastPath:
    """aioice's ``Connection.data_received`` for one transport: SRTP of a routed SSRC is
    unprotected (the DTLS transport's own rx session) and handed to its tap at once;
    everything else (STUN, DTLS, RTCP, a new SSRC) goes the way aiortc takes it:
    aioice's queue, the DTLS transport's receive task, the receiver."""

    def __init__(self, connection: aioice.ice.Connection, dtls: RTCDtlsTransport) -> None:
        self._aiortc_path = connection.data_received
        self._dtls = dtls
        self.routes: dict[int, _Tap] = {}
        self.packets = 0
        """Packets this path handed over (the rest went through aiortc)."""

    def __call__(self, data: bytes, component: int) -> None:
        if len(data) >= 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 208:
            tap = self.routes.get(int.from_bytes(data[8:12], "big"))
            srtp = self._dtls._rx_srtp
            if tap is not None and srtp is not None:
                try:
                    plain = srtp.unprotect(data)
                except pylibsrtp.Error:
                    return  # as aiortc: replayed or forged, dropped
                self.packets += 1
                tap.deliver(plain)
                return
        self._aiortc_path(data, component)


def _ice_connection_or_none(dtls: object) -> object:
    return getattr(getattr(dtls, "transport", None), "_connection", None)


def check_receive_path(dtls: object) -> None:
    """The DTLS transport and its aioice connection still have what the fast path uses."""
    connection = _ice_connection_or_none(dtls)
    names = _code_names(getattr(RTCDtlsTransport, "_recv_next", None))
    if (not isinstance(connection, aioice.ice.Connection)
            or not callable(getattr(connection, "data_received", None))
            or not hasattr(dtls, "_rx_srtp") or "_rx_srtp" not in names
            or not hasattr(getattr(dtls, "_rtp_header_extensions_map", None), _EXT_IDS)
            or "data_received" not in _code_names(aioice.ice.StunProtocol.datagram_received)):
        raise CompatError(
            "aiortc's RTCDtlsTransport (_rx_srtp, _rtp_header_extensions_map, an aioice "
            "Connection whose data_received the sockets call) changed; the fast receive "
            "path cannot be installed (supported: aiortc 1.16.x, aioice 0.13.x)"
        )


def take_rtp(receiver: RTCRtpReceiver, sink: RtpSink,
             counters: CountersSource | None = None) -> None:
    """Route every RTP packet ``receiver`` accepts to ``sink`` instead of aiortc's decoder.

    Call it before the connection starts (right after setRemoteDescription).
    With ``counters`` (the sink's view of the stream), packets after the first
    of each SSRC take the fast path (aioice's datagram -> SRTP unprotect ->
    ``protocol.rtp_parse`` -> ``sink``, on the loop, no queue or coroutine), and
    the receiver's RTCP reports are computed from ``counters`` at aiortc's usual
    interval. Raises ``CompatError`` if this receiver has no jitter buffer or
    codec table where aiortc 1.16 keeps them, or (with ``counters``) if the
    transports lack what the fast path uses.
    """
    current = getattr(receiver, _JITTER_BUFFER, None)
    codecs = getattr(receiver, _CODECS, None)
    if not isinstance(current, JitterBuffer) or not isinstance(codecs, dict):
        raise CompatError(
            f"this RTCRtpReceiver has no {_JITTER_BUFFER} (JitterBuffer) or {_CODECS} (dict): "
            f"found {type(current).__name__} and {type(codecs).__name__}"
        )
    if counters is not None:
        if not isinstance(getattr(receiver, _REMOTE_STREAMS, None), dict):
            raise CompatError(f"this RTCRtpReceiver has no {_REMOTE_STREAMS} (dict)")
        dtls = receiver.transport
        check_receive_path(dtls)
        connection = _ice_connection_or_none(dtls)
        if not isinstance(getattr(connection, _FAST_PATH, None), _FastPath):
            assert isinstance(connection, aioice.ice.Connection)
            fast = _FastPath(connection, dtls)
            setattr(connection, _FAST_PATH, fast)
            setattr(connection, "data_received", fast)  # noqa: B010 (an instance attribute)
    setattr(receiver, _JITTER_BUFFER, _Tap(codecs, sink, receiver=receiver, counters=counters))


def fast_path_packets(receiver: RTCRtpReceiver) -> int:
    """How many packets the fast path handed over on ``receiver``'s transport (tests)."""
    fast = getattr(_ice_connection_or_none(receiver.transport), _FAST_PATH, None)
    return fast.packets if isinstance(fast, _FastPath) else 0


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


# --- send path (issue #15): RTP out without aiortc's sender loop ---------------------------
#
# aiortc sends each listener's packets from one ``RTCRtpSender._run_rtp`` coroutine per
# listener: await the track, build an ``RtpPacket``, serialize it, SRTP-protect it in
# ``RTCDtlsTransport._send_rtp`` and await aioice's ``Connection.send``. ``take_sending``
# keeps aiortc for ICE, DTLS, negotiation and RTCP, and hands the caller what it needs to
# send RTP itself (``SendTarget``: the negotiated codecs and mid, the header extension
# block aiortc would write, the DTLS-derived SRTP tx session's ``protect``, and the
# nominated ICE pair's datagram ``sendto``). aiortc's sender keeps sending its RTCP
# sender reports; they read the caller's ``SendCounters`` (``_CountedSender``).


class SendCounters:
    """What an RTCP sender report says about one stream, kept by whoever sends its RTP.

    ``note`` is called once per packet sent; the report reads the rest when it goes out
    (about once a second), so nothing of RTCP runs per packet.
    """

    __slots__ = ("octet_count", "packet_count", "rtp_timestamp", "sent_at")

    def __init__(self) -> None:
        self.packet_count = 0
        self.octet_count = 0
        """Payload bytes (RFC 3550: not headers)."""
        self.rtp_timestamp = 0
        """RTP timestamp of the last packet sent..."""
        self.sent_at = 0.0
        """...and when it went out (``time.time()``)."""

    @property
    def ntp_timestamp(self) -> int:
        """``sent_at`` as a 64-bit NTP timestamp (what aiortc's SR carries)."""
        if not self.sent_at:
            return 0
        seconds = self.sent_at + NTP_UNIX_OFFSET_S
        whole = int(seconds)
        return (whole << 32) | int((seconds - whole) * (1 << 32))


NTP_UNIX_OFFSET_S = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_SR_FIELDS = {
    "_RTCRtpSender__ntp_timestamp": "ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp": "rtp_timestamp",
    "_RTCRtpSender__octet_count": "octet_count",
    "_RTCRtpSender__packet_count": "packet_count",
}
"""aiortc's private sender-report counters -> the ``SendCounters`` attribute they read."""
_COUNTERS_ATTR = "_disco_send_counters"


def _counter(field: str) -> property:
    def get(sender: Any) -> Any:
        return getattr(getattr(sender, _COUNTERS_ATTR), field)

    def set_(sender: Any, value: Any) -> None:
        if field != "ntp_timestamp":  # aiortc's own loop, if it ever sends: keep counting
            setattr(getattr(sender, _COUNTERS_ATTR), field, value)

    return property(get, set_)


class _CountedSender(RTCRtpSender):
    """aiortc's sender whose sender reports read a ``SendCounters`` (set per instance)."""

    _RTCRtpSender__ntp_timestamp = _counter("ntp_timestamp")
    _RTCRtpSender__rtp_timestamp = _counter("rtp_timestamp")
    _RTCRtpSender__octet_count = _counter("octet_count")
    _RTCRtpSender__packet_count = _counter("packet_count")


Datagram = Callable[[bytes], None]


@dataclass(frozen=True)
class SendTarget:
    """Everything needed to put one listener's RTP on the wire, once DTLS is up."""

    ssrc: int
    codecs: tuple[tuple[int, str], ...]
    """The negotiated codecs as (payload type, lower-case MIME), aiortc's first first."""
    header_extensions: bytes
    """The extension block aiortc writes after the 12-byte header (b"" if none)."""
    protect: Callable[[bytes], bytes]
    """SRTP-protect one RTP packet (the DTLS-derived tx session)."""
    send: Datagram
    """Send one datagram on the nominated ICE pair (stop when the connection closes)."""

    def payload_type(self, mime: str) -> int | None:
        return next((pt for pt, m in self.codecs if m == mime), None)


SendReady = Callable[[SendTarget], None]


def check_sender_class(cls: type) -> None:
    """The sender still keeps the private parts ``take_sending`` relies on."""
    rtcp_names = _code_names(getattr(cls, "_run_rtcp", None))
    rtp_names = _code_names(getattr(cls, "_run_rtp", None))
    missing = [a for a in _SR_FIELDS if a not in rtcp_names or a not in rtp_names]
    if missing or not callable(getattr(cls, "send", None)):
        raise CompatError(
            f"aiortc's RTCRtpSender no longer reports {', '.join(missing) or 'send'} in its "
            "RTCP loop; the fast send path cannot keep sender reports right "
            "(supported: aiortc 1.16.x)"
        )


def take_sending(sender: RTCRtpSender, counters: SendCounters, on_ready: SendReady) -> None:
    """Send ``sender``'s RTP ourselves: ``on_ready(target)`` once aiortc starts it.

    aiortc starts a sender (``send(parameters)``) right after its DTLS transport
    connects; its RTCP loop then runs as usual but reads ``counters``. Its RTP
    loop still awaits the sender's track: give it one that never yields.
    Call before the connection starts. Raises ``CompatError`` if aiortc changed.
    """
    check_sender_class(type(sender))
    if type(sender) is not RTCRtpSender and not isinstance(sender, _CountedSender):
        raise CompatError(f"cannot count for a {type(sender).__name__}")
    setattr(sender, _COUNTERS_ATTR, counters)
    sender.__class__ = _CountedSender
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        await original(parameters)
        on_ready(send_target(sender, parameters))

    setattr(sender, "send", send)  # noqa: B010 (an instance attribute over a method)


def header_extension_block(parameters: RTCRtpParameters, mid: str | None) -> bytes:
    """The header extension block aiortc's sender writes for ``parameters`` (with its mid;
    no audio level, which aiortc only adds to frames it encodes itself)."""
    extensions = HeaderExtensionsMap()
    extensions.configure(parameters)
    packet = RtpPacket()
    packet.extensions.mid = mid
    return packet.serialize(extensions)[12:]


def send_target(sender: RTCRtpSender, parameters: RTCRtpSendParameters) -> SendTarget:
    """What ``take_sending`` hands over, read from a started sender and its transports."""
    dtls = sender.transport
    session = getattr(dtls, "_tx_srtp", None)
    protect = getattr(session, "protect", None)
    if not callable(protect):
        raise CompatError("RTCDtlsTransport has no _tx_srtp session with protect()")
    connection = ice_connection(dtls.transport)
    nominated = getattr(connection, "_nominated", None)
    pair = nominated.get(1) if isinstance(nominated, dict) else None
    if pair is None:
        raise CompatError("aioice's Connection has no nominated pair for component 1")
    protocol, addr = pair.protocol, pair.remote_addr
    send: Datagram
    if type(protocol).send_data is aioice.ice.StunProtocol.send_data:
        udp = protocol.transport  # send_data is transport.sendto: call it directly

        def send(data: bytes) -> None:
            udp.sendto(data, addr)
    else:  # a TURN relay: aioice's coroutine, one task per packet (they start in order)
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        def send(data: bytes) -> None:
            task = loop.create_task(protocol.send_data(data, addr))
            pending.add(task)
            task.add_done_callback(pending.discard)

    return SendTarget(
        ssrc=sender._ssrc,
        codecs=tuple((int(c.payloadType or 0), c.mimeType.lower()) for c in parameters.codecs),
        header_extensions=header_extension_block(parameters, parameters.muxId),
        protect=protect, send=send)


OFFERED_DYNAMIC_PAYLOAD_TYPES = tuple(range(35, 64)) + tuple(range(96, 128))
"""Payload types an answer takes from the offer: RFC 3551's dynamic 96-127, and 35-63,
where Chrome puts codecs (RED among them) once 96-127 run out."""


def answer_offered_payload_types() -> None:
    """aiortc answers a codec with the offer's payload type only if it is in 96-127
    (``aiortc.rtp.DYNAMIC_PAYLOAD_TYPES``, read by ``find_common_codecs``); a RED offered
    at 40 was answered at our table's 63, and RED sent at 63 would not be understood.
    Widen it to ``OFFERED_DYNAMIC_PAYLOAD_TYPES`` (idempotent; called by ``install``)."""
    current = getattr(aiortc.rtp, "DYNAMIC_PAYLOAD_TYPES", None)
    if not isinstance(current, (range, tuple)) or 96 not in current:
        raise CompatError("aiortc.rtp.DYNAMIC_PAYLOAD_TYPES is gone or changed; offered "
                          "payload types cannot be kept (supported: aiortc 1.16.x)")
    aiortc.rtp.DYNAMIC_PAYLOAD_TYPES = OFFERED_DYNAMIC_PAYLOAD_TYPES  # type: ignore[assignment]


def tap_plaintext_rtp(transport: RTCDtlsTransport, sink: Callable[[bytes], None]) -> None:
    """For tests: every RTP packet ``transport`` decrypts, as bytes, to ``sink`` (a
    receiving client's view of what the far end protected)."""
    session: Any = getattr(transport, "_rx_srtp", None)
    if session is None or not callable(getattr(session, "unprotect", None)):
        raise CompatError("RTCDtlsTransport has no _rx_srtp session (not connected yet?)")

    class Tapped:
        def __getattr__(self, name: str) -> Any:
            return getattr(session, name)

        def unprotect(self, data: bytes) -> bytes:
            plain: bytes = session.unprotect(data)
            sink(plain)
            return plain

    setattr(transport, "_rx_srtp", Tapped())  # noqa: B010


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
