"""One listener's outbound RTP stream, sent without aiortc's sender loop (issue #15).

The room encodes each distinct mix once a tick and hands the payload to every
listener of that mix (``sfu.peer.Peer.send``); for each of them this module
builds the RTP header (the listener's SSRC, sequence number and timestamp, the
payload type chosen per packet, the marker and the header extension block
aiortc would write, e.g. ``sdes:mid``), SRTP-protects the packet with the
listener's DTLS-derived session and sends it on the nominated ICE pair: a few
microseconds of C per packet, where aiortc's ``RTCRtpSender`` ran a coroutine
per listener per packet. ``protocol.aiortc_compat.take_sending`` supplies the
``SendTarget`` (codecs, extensions, ``protect``, ``send``) once aiortc starts
the sender; before that (ICE and DTLS still connecting) nothing could be sent
on either path, and frames only advance the timestamp.

RTCP stays aiortc's: its sender reports read this stream's ``SendCounters``
(packets, payload octets, last RTP timestamp and when it went out), so no
RTCP work is done per packet.

RED (RFC 2198, issue #14): a listener who offered ``red/48000/2`` gets each
frame wrapped with the ``RED_DISTANCE`` frames before it while their receiver
reports call for it (``sfu.fec_policy.RedController``: on at 5 % loss, off
after 10 s under 2 %); the payload type switches per packet, which aiortc's
sender (the first negotiated codec, always) could not do.

The header building is pure (``rtp_header``, table-tested against aiortc's
``RtpPacket.serialize``); ``OutboundStream`` only calls the target it is given.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable

from protocol.aiortc_compat import SendCounters, SendTarget
from protocol.red import RedPacketizer
from sfu.fec_policy import RedController, loss_perc
from sfu.mixer import FRAME_SAMPLES

logger = logging.getLogger(__name__)

OPUS_MIME = "audio/opus"
RED_MIME = "audio/red"
RED_DISTANCE = 2
"""Earlier frames in each RED packet: two, so a double loss is still repaired."""
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
SEQ_START_MAX = 1 << 15
"""First sequence number in the lower half, as aiortc does (no early wrap: SRTP's ROC)."""

_VERSION = 0x80
_EXTENSION = 0x10
_MARKER = 0x80
_FIXED = struct.Struct("!BBHLL")


def rtp_header(payload_type: int, sequence_number: int, timestamp: int, ssrc: int,
               extensions: bytes = b"", *, marker: bool = True) -> bytes:
    """The RTP header (RFC 3550) for one packet, ``extensions`` as aiortc serializes them.

    ``marker`` defaults to set: aiortc marks the last (for audio: the only)
    packet of every frame, and this path puts the same bytes on the wire.
    """
    return _FIXED.pack(_VERSION | (_EXTENSION if extensions else 0),
                       (_MARKER if marker else 0) | payload_type,
                       sequence_number, timestamp, ssrc) + extensions


class OutboundStream:
    """A listener's RTP stream: numbering, RED choice, counters; sends through a target."""

    def __init__(self, *, first_sequence: int | None = None,
                 first_timestamp: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.counters = SendCounters()
        self.sequence = (random.randrange(SEQ_START_MAX) if first_sequence is None
                         else first_sequence % SEQ_MOD)
        self.timestamp = (random.randrange(TS_MOD) if first_timestamp is None
                          else first_timestamp % TS_MOD)
        """RTP timestamp of the next frame."""
        self.target: SendTarget | None = None
        self.red_sent = 0
        """Packets sent as RED."""
        self._clock = clock
        self._fixed = _FIXED
        self._first = _VERSION
        self._extensions = b""
        self._ssrc = 0
        self._opus_pt = 0
        self._red_pt: int | None = None
        self._red: RedPacketizer | None = None
        self._red_on = False
        self._red_controller = RedController()

    @property
    def ready(self) -> bool:
        return self.target is not None

    @property
    def red_offered(self) -> bool:
        return self._red_pt is not None

    @property
    def red_on(self) -> bool:
        return self._red_on

    def start(self, target: SendTarget) -> None:
        """The transport is up: send from now on (``aiortc_compat.take_sending``'s call)."""
        opus = target.payload_type(OPUS_MIME)
        if opus is None:  # the mix is Opus: nothing this listener could play
            logger.warning("no Opus negotiated (%s): the mix is not sent", target.codecs)
            return
        self._opus_pt = opus
        self._red_pt = target.payload_type(RED_MIME)
        self._red = RedPacketizer(opus, RED_DISTANCE) if self._red_pt is not None else None
        self._extensions = target.header_extensions
        self._first = _VERSION | (_EXTENSION if target.header_extensions else 0)
        self._ssrc = target.ssrc
        self.target = target

    def stop(self) -> None:
        """The connection is gone: send nothing more."""
        self.target = None

    def follow_loss(self, fraction_lost: int, now: float) -> bool:
        """One receiver report's fraction lost (0..255): RED on or off (hysteresis)."""
        if self._red_pt is None:
            return False
        self._red_on = self._red_controller.update(loss_perc(fraction_lost), now)
        return self._red_on

    def send(self, payload: bytes) -> None:
        """Send one 20 ms Opus frame (or only advance time if the transport is not up)."""
        ts = self.timestamp
        self.timestamp = (ts + FRAME_SAMPLES) % TS_MOD
        target = self.target
        if target is None:
            return
        seq = self.sequence
        red_pt = self._red_pt
        if self._red_on and self._red is not None and red_pt is not None:
            body = self._red.wrap(payload, ts)
            pt = red_pt
            self.red_sent += 1
        else:
            body = payload
            pt = self._opus_pt
        packet = self._fixed.pack(self._first, _MARKER | pt, seq, ts, self._ssrc)
        target.send(target.protect(packet + self._extensions + body))
        self.sequence = (seq + 1) % SEQ_MOD
        c = self.counters
        c.packet_count += 1
        c.octet_count += len(body)
        c.rtp_timestamp = ts
        c.sent_at = self._clock()

    def skip(self, frames: int) -> None:
        """Frames the room's clock skipped: keep the timestamps on the clock."""
        self.timestamp = (self.timestamp + frames * FRAME_SAMPLES) % TS_MOD
