"""RTCP: the far end's reports read without aiortc's per-packet objects (issue #15).

``watch_receiver_reports`` (per sender)
    aiortc reads the receiver reports (RTCP RR/SR report blocks) that the far
    end sends about our stream in ``RTCRtpSender._handle_rtcp_packet`` and
    keeps them only for its async ``getStats``. ``watch_receiver_reports``
    hands each report block about one sender's SSRC, as a ``ReceiverReport``
    (fraction lost, jitter, the sender's RTT estimate, its private ``__rtt``),
    to a callback on the event loop: from the fast path below, or from aiortc's
    handler (wrapped on that sender) for what the fast path leaves to aiortc.

``handle_rtcp`` (the fast path's RTCP, per transport)
    aiortc takes each SRTCP datagram through aioice's queue and the DTLS
    transport's receive coroutine, parses it into packet objects, walks its
    routing table and builds statistics records (with ``datetime`` stamps)
    per packet: at 40 participants whose clients report every 0.5-1.5 s, 7%
    of the room's Python time (py-spy, ``bench.voice --sizes 40``). The fast
    path (``receive._FastPath``) unprotects SRTCP itself and calls
    ``handle_rtcp`` with the plaintext: ``protocol.rtcp.parse_compound`` reads
    it, each sender report's NTP time goes where aiortc keeps it for the LSR of
    its receiver reports (the receiver's private ``__lsr``/``__lsr_time``), and
    each report block about one of our senders updates that sender's RTT as
    aiortc does (its private ``__lsr``/``__lsr_time``/``__rtt``) and goes to
    its watcher. A packet with BYE or feedback (RTPFB, PSFB) goes to aiortc's
    own ``_handle_rtcp_data`` whole, as it would have.

``paced_rtcp_loop`` (the server's senders and receivers)
    aiortc's ``_run_rtcp`` loops report every 0.5-1.5 s (``asyncio.sleep(0.5 +
    random.random())``): five times what libwebrtc sends for audio
    (``kDefaultAudioReportInterval``, 5 s) and under RFC 3550 6.2's 5 s
    minimum. ``paced_rtcp_loop`` copies one of those loops (same code object)
    with an ``asyncio`` whose ``sleep`` stretches each wait to
    ``AUDIO_RTCP_INTERVAL_S`` on average; the fast paths' classes
    (``send._CountedSender``, ``receive._PacedReceiver``) use the copies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTT_ALPHA, RTCRtpSender
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from protocol.aiortc_compat.negotiation import RTP_CLOCK_HZ, CompatError, _code_names
from protocol.rtcp import ReportBlock, parse_compound

logger = logging.getLogger(__name__)

_SENDER_RTT = "_RTCRtpSender__rtt"
_SENDER_LSR = "_RTCRtpSender__lsr"
_SENDER_LSR_TIME = "_RTCRtpSender__lsr_time"
_SENDER_SSRC = "_ssrc"
_RECEIVER_LSR = "_RTCRtpReceiver__lsr"
_RECEIVER_LSR_TIME = "_RTCRtpReceiver__lsr_time"
_SINK_ATTR = "_disco_report_sink"
DLSR_UNITS_PER_S = 65_536
"""RFC 3550: DLSR counts 1/65536 s."""
AUDIO_RTCP_INTERVAL_S = 5.0
"""Mean time between our reports on a voice stream (each wait is 0.5-1.5 times it)."""
AIORTC_RTCP_INTERVAL_S = 1.0
"""Mean of aiortc's own waits (``0.5 + random.random()``)."""


class ReceiverReport(NamedTuple):
    """One RTCP report block the far end sent about the stream we send it."""

    fraction_lost: int
    """Share of our packets lost since its previous report, in 1/256 (RFC 3550)."""
    jitter_s: float
    """Its interarrival jitter estimate, in seconds."""
    rtt_s: float | None
    """The round-trip estimate (from the reports' LSR/DLSR, as aiortc smooths it);
    None until known."""


ReportSink = Callable[[ReceiverReport], None]


def _report(sender: Any, fraction_lost: int, jitter: int) -> None:
    sink = getattr(sender, _SINK_ATTR, None)
    if sink is not None:
        sink(ReceiverReport(int(fraction_lost), jitter / RTP_CLOCK_HZ, sender_rtt(sender)))


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """aiortc's round-trip estimate for one sender (None until a report echoed ours)."""
    rtt = getattr(sender, _SENDER_RTT, None)
    return float(rtt) if rtt is not None else None


def check_rtcp_handlers() -> None:
    """aiortc's sender and receiver still keep, in their RTCP code, the private parts
    ``watch_receiver_reports`` and ``handle_rtcp`` read and write."""
    sender = _code_names(getattr(RTCRtpSender, "_handle_rtcp_packet", None))
    receiver = _code_names(getattr(RTCRtpReceiver, "_handle_rtcp_packet", None))
    route = _code_names(getattr(RTCDtlsTransport, "_handle_rtcp_data", None))
    missing = ([n for n in (_SENDER_RTT, _SENDER_LSR, _SENDER_LSR_TIME) if n not in sender]
               + [n for n in (_RECEIVER_LSR, _RECEIVER_LSR_TIME) if n not in receiver]
               + [n for n in ("_rtp_router", "route_rtcp") if n not in route])
    if missing:
        raise CompatError(
            f"aiortc's RTCP handling no longer uses {', '.join(missing)}; receiver reports "
            "cannot be read (supported: aiortc 1.16.x)"
        )


def watch_receiver_reports(sender: RTCRtpSender, sink: ReportSink) -> None:
    """Hand each receiver report block about ``sender``'s stream to ``sink`` as it arrives.

    Raises ``CompatError`` if the sender no longer handles RTCP in
    ``_handle_rtcp_packet`` (a coroutine method) or has no ``_ssrc``.
    """
    original = getattr(sender, "_handle_rtcp_packet", None)
    if not callable(original) or not isinstance(getattr(sender, _SENDER_SSRC, None), int):
        raise CompatError(
            "aiortc's RTCRtpSender no longer handles receiver reports in "
            "_handle_rtcp_packet (with _ssrc); loss reports cannot be read "
            "(supported: aiortc 1.16.x)"
        )
    check_rtcp_handlers()
    setattr(sender, _SINK_ATTR, sink)

    async def handle(packet: object) -> None:
        await original(packet)
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            ssrc = getattr(sender, _SENDER_SSRC)
            for block in packet.reports:
                if block.ssrc == ssrc:
                    _report(sender, block.fraction_lost, block.jitter)

    setattr(sender, "_handle_rtcp_packet", handle)  # noqa: B010 (an instance attribute)


_PENDING: set[asyncio.Task[None]] = set()
"""aiortc's handler tasks for the packets handed to it (kept until they finish)."""


def handle_rtcp(dtls: RTCDtlsTransport, plain: bytes) -> None:
    """One unprotected compound RTCP packet that arrived on ``dtls``'s connection."""
    try:
        compound = parse_compound(plain)
    except ValueError as exc:  # as aiortc: logged, dropped
        logger.debug("RTCP parsing failed: %s", exc)
        return
    if not compound.handled_here:
        task = asyncio.get_running_loop().create_task(dtls._handle_rtcp_data(plain))
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)
        return
    router: Any = dtls._rtp_router
    if compound.sender_reports:
        now = time.time()
        for report in compound.sender_reports:
            receiver = router.ssrc_table.get(report.ssrc)
            if receiver is not None:
                getattr(receiver, _RECEIVER_LSR)[report.ssrc] = report.lsr
                getattr(receiver, _RECEIVER_LSR_TIME)[report.ssrc] = now
    for block in compound.blocks:
        sender = router.senders.get(block.ssrc)
        if sender is not None:
            _update_rtt(sender, block)
            _report(sender, block.fraction_lost, block.jitter)


def _update_rtt(sender: Any, block: ReportBlock) -> None:
    """aiortc's estimate (``RTCRtpSender._handle_rtcp_packet``): the block echoes our
    last sender report (LSR) and says how long it held it (DLSR)."""
    if block.dlsr and getattr(sender, _SENDER_LSR, None) == block.lsr:
        rtt = time.time() - getattr(sender, _SENDER_LSR_TIME) - block.dlsr / DLSR_UNITS_PER_S
        previous = getattr(sender, _SENDER_RTT, None)
        setattr(sender, _SENDER_RTT,
                rtt if previous is None else RTT_ALPHA * previous + (1 - RTT_ALPHA) * rtt)


# --- our own reports, at the audio interval ----------------------------------------------


class _PacedAsyncio:
    """``asyncio`` as a paced copy of aiortc's RTCP loop sees it: ``sleep`` stretched."""

    def __init__(self, scale: float) -> None:
        self._scale = scale

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def sleep(self, delay: float, result: Any = None) -> Coroutine[Any, Any, Any]:
        return asyncio.sleep(delay * self._scale, result)


def check_rtcp_loop(fn: object) -> None:
    """``fn`` is still an aiortc RTCP loop that waits ``0.5 + random.random()`` s."""
    code = getattr(fn, "__code__", None)
    if (code is None or not {"asyncio", "sleep", "random"} <= set(code.co_names)
            or 0.5 not in code.co_consts):
        raise CompatError(
            f"aiortc's {getattr(fn, '__qualname__', fn)} no longer waits "
            "asyncio.sleep(0.5 + random.random()) between reports; it cannot be paced "
            "(supported: aiortc 1.16.x)"
        )


def paced_rtcp_loop(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of aiortc's ``_run_rtcp`` ``fn`` that waits ``AUDIO_RTCP_INTERVAL_S`` on
    average between reports (``CompatError`` if ``fn`` no longer looks as expected)."""
    check_rtcp_loop(fn)
    paced_globals = dict(fn.__globals__)
    paced_globals["asyncio"] = _PacedAsyncio(AUDIO_RTCP_INTERVAL_S / AIORTC_RTCP_INTERVAL_S)
    paced = types.FunctionType(fn.__code__, paced_globals, fn.__name__, fn.__defaults__,
                               fn.__closure__)
    paced.__qualname__ = fn.__qualname__
    paced.__doc__ = f"aiortc's {fn.__qualname__}, reporting every {AUDIO_RTCP_INTERVAL_S} s."
    return paced
