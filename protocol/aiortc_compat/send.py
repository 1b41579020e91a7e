"""The send path: every reach for aiortc's ``RTCRtpSender``, one sender at a time.

``send_audio_level`` (per sender)
    aiortc's ``RTCRtpSender`` puts the RFC 6464 level in a packet only when it
    encodes the frame itself; ``send_audio_level`` wraps one sender's private
    ``_next_encoded_frame`` so pre-encoded packets carry a level too (load
    clients and tests that send Opus they encoded, as browsers do with DTX).

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
    ``__ntp_timestamp``) read the caller's ``SendCounters``, and whose loop
    reports at the audio interval (``rtcp.paced_rtcp_loop``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpParameters, RTCRtpSendParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from protocol.aiortc_compat import polled as polled_socket
from protocol.aiortc_compat.negotiation import (
    CompatError,
    _code_names,
    ice_connection,
)
from protocol.aiortc_compat.receive import _FAST_PATH, _FastPath
from protocol.aiortc_compat.rtcp import paced_rtcp_loop
from protocol.aiortc_compat.srtp import DirectSrtp

logger = logging.getLogger(__name__)


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
    """aiortc's sender whose sender reports read a ``SendCounters`` (set per instance),
    at the audio interval (``rtcp.paced_rtcp_loop``)."""

    _run_rtcp = paced_rtcp_loop(RTCRtpSender._run_rtcp)

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
    polled: bool = False
    """The pair's socket is read by ``polled.poll_sockets`` (each room tick), not by the
    event loop as packets come."""

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


def take_sending(sender: RTCRtpSender, counters: SendCounters, on_ready: SendReady, *,
                 polled: bool = False) -> None:
    """Send ``sender``'s RTP ourselves: ``on_ready(target)`` once aiortc starts it.

    aiortc starts a sender (``send(parameters)``) right after its DTLS transport
    connects; its RTCP loop then runs as usual but reads ``counters``. Its RTP
    loop still awaits the sender's track: give it one that never yields.
    With ``polled``, the nominated host pair's socket is then taken from the
    event loop (``polled.take_socket``): ``polled.poll_sockets`` reads it.
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
        on_ready(send_target(sender, parameters, polled=polled))

    setattr(sender, "send", send)  # noqa: B010 (an instance attribute over a method)


def header_extension_block(parameters: RTCRtpParameters, mid: str | None) -> bytes:
    """The header extension block aiortc's sender writes for ``parameters`` (with its mid;
    no audio level, which aiortc only adds to frames it encodes itself)."""
    extensions = HeaderExtensionsMap()
    extensions.configure(parameters)
    packet = RtpPacket()
    packet.extensions.mid = mid
    return packet.serialize(extensions)[12:]


def send_target(sender: RTCRtpSender, parameters: RTCRtpSendParameters, *,
                polled: bool = False) -> SendTarget:
    """What ``take_sending`` hands over, read from a started sender and its transports."""
    dtls = sender.transport
    session = getattr(dtls, "_tx_srtp", None)
    if not isinstance(session, pylibsrtp.Session):
        raise CompatError("RTCDtlsTransport has no _tx_srtp session (pylibsrtp.Session)")
    protect = DirectSrtp(session).protect
    connection = ice_connection(dtls.transport)
    nominated = getattr(connection, "_nominated", None)
    pair = nominated.get(1) if isinstance(nominated, dict) else None
    if pair is None:
        raise CompatError("aioice's Connection has no nominated pair for component 1")
    protocol, addr = pair.protocol, pair.remote_addr
    send: Datagram
    host = type(protocol).send_data is aioice.ice.StunProtocol.send_data
    fast = getattr(connection, _FAST_PATH, None)
    taken = None
    if polled and host and isinstance(fast, _FastPath) and polled_socket.supported():
        try:
            taken = polled_socket.take_socket(protocol, fast)
        except CompatError as exc:  # the loop keeps reading it: slower, still right
            logger.warning("a peer's socket stays the event loop's: %s", exc)
    if taken is not None:
        polled_transport = taken

        def send(data: bytes) -> None:
            polled_transport.sendto(data, addr)
    elif host:
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
        protect=protect, send=send, polled=taken is not None)
