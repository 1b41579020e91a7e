"""The receive path: the RTP demux in front of aioice, ``take_rtp`` and its fast path.

The demux is installed process-wide by ``install`` (``protocol.aiortc_compat``);
the rest is per receiver:

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
    coroutines, no ``RtpPacket``, no per-packet statistics. SRTCP is unprotected
    there too and read by ``rtcp.handle_rtcp``. STUN, DTLS and unknown SSRCs
    still go aiortc's way. aiortc's per-SSRC statistics (the
    receiver's private ``__remote_streams``) are replaced by ones read from
    ``counters`` when a report is due, so RTCP receiver reports (and
    ``getStats``) say what the playout saw; they go out at the audio interval
    (the receiver's class becomes ``_PacedReceiver``, ``rtcp.paced_rtcp_loop``).

``tap_plaintext_rtp`` (for tests) hands each RTP packet a transport decrypts
to a callback: a receiving client's view of what the far end protected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import aioice.ice
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from protocol.aiortc_compat.negotiation import RTP_CLOCK_HZ, CompatError, _code_names
from protocol.aiortc_compat.rtcp import handle_rtcp, paced_rtcp_loop
from protocol.aiortc_compat.srtp import DirectSrtp
from protocol.rtp_parse import parse_rtp

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_CODECS = "_RTCRtpReceiver__codecs"
_AIOICE_DATAGRAM_RECEIVED = aioice.ice.StunProtocol.datagram_received


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
    arrival_s: float | None = None
    """When the kernel received it, on the event loop's clock, if known (a polled socket,
    ``protocol.aiortc_compat.polled``); None: it is arriving now."""


RtpSink = Callable[[InboundRtp, str], None]
"""Called with each inbound RTP packet and its codec's lower-case MIME type."""


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

    def deliver(self, plain: bytes, arrival: float | None = None) -> None:
        """One unprotected RTP packet from the fast path (its SSRC is routed here)."""
        try:
            h = parse_rtp(plain, self._level_id)
        except ValueError:
            return  # as aiortc: a malformed packet is dropped
        if h.payload_type not in self._codecs:
            return  # as aiortc: an unknown payload type is dropped
        self._sink(InboundRtp(h.sequence_number, h.timestamp, h.payload_type, h.payload,
                              h.audio_level, arrival), self._mime(h.payload_type))


class _FastPath:
    """aioice's ``Connection.data_received`` for one transport: SRTP of a routed SSRC is
    unprotected (the DTLS transport's own rx session) and handed to its tap at once,
    SRTCP to ``rtcp.handle_rtcp``; everything else (STUN, DTLS, a new SSRC) goes the
    way aiortc takes it: aioice's queue, the DTLS transport's receive task, the
    receiver."""

    def __init__(self, connection: aioice.ice.Connection, dtls: RTCDtlsTransport) -> None:
        self._aiortc_path = connection.data_received
        self._dtls = dtls
        self._srtp: DirectSrtp | None = None
        """The DTLS transport's rx session, called directly (``srtp.DirectSrtp``)."""
        self.routes: dict[int, _Tap] = {}
        self.packets = 0
        """RTP packets this path handed over (the rest went through aiortc)."""
        self.rtcp_packets = 0
        """SRTCP packets this path unprotected and read (``rtcp.handle_rtcp``)."""

    def __call__(self, data: bytes, component: int) -> None:
        if not self.take(data, None):
            self._aiortc_path(data, component)

    def take(self, data: bytes, arrival: float | None) -> bool:
        """Hand ``data`` to its tap if it is SRTP of a routed SSRC, or to ``handle_rtcp``
        if it is SRTCP (True: taken, even if it failed to authenticate); False: it
        goes aiortc's way."""
        if len(data) < 12 or not 127 < data[0] < 192:
            return False
        rtcp = 192 <= data[1] <= 208
        tap = None
        if not rtcp:
            tap = self.routes.get(int.from_bytes(data[8:12], "big"))
            if tap is None:
                return False
        srtp = self._srtp
        if srtp is None or srtp.session is not self._dtls._rx_srtp:
            session = self._dtls._rx_srtp
            if session is None:
                return False
            srtp = self._srtp = DirectSrtp(session)
        plain = srtp.unprotect(data, rtcp=rtcp)
        if plain is None:  # as aiortc: replayed or forged, dropped
            return True
        if tap is not None:
            self.packets += 1
            tap.deliver(plain, arrival)
        else:
            self.rtcp_packets += 1
            handle_rtcp(self._dtls, plain)
        return True


class _PacedReceiver(RTCRtpReceiver):
    """aiortc's receiver, its receiver reports at the audio interval (``take_rtp`` with
    counters makes a receiver one)."""

    _run_rtcp = paced_rtcp_loop(RTCRtpReceiver._run_rtcp)


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
    the receiver's RTCP reports are computed from ``counters``, every 5 s on
    average (``rtcp.AUDIO_RTCP_INTERVAL_S``). Raises ``CompatError`` if this
    receiver has no jitter buffer or codec table where aiortc 1.16 keeps them,
    or (with ``counters``) if the transports lack what the fast path uses.
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
        if type(receiver) is RTCRtpReceiver:
            receiver.__class__ = _PacedReceiver
    setattr(receiver, _JITTER_BUFFER, _Tap(codecs, sink, receiver=receiver, counters=counters))


def fast_path_packets(receiver: RTCRtpReceiver, *, rtcp: bool = False) -> int:
    """How many RTP (``rtcp``: SRTCP) packets the fast path took on ``receiver``'s
    transport (tests)."""
    fast = getattr(_ice_connection_or_none(receiver.transport), _FAST_PATH, None)
    if not isinstance(fast, _FastPath):
        return 0
    return fast.rtcp_packets if rtcp else fast.packets


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
