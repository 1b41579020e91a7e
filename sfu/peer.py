"""One participant's aiortc peer connection (aiortc's camelCase stays in here).

Inbound: ``aiortc_compat.take_rtp`` hands each RTP packet of a receiver to an
``sfu.inbound.InboundStream`` on the event loop as it arrives (aiortc's own
jitter buffer and decoder thread get nothing; after a stream's first packet,
its SRTP datagrams go from the socket straight to the stream, and the RTCP
receiver reports are computed from the stream's counters). Once DTLS is up
the peer's socket is polled (``polled_receive``): the room's clock reads every
peer's socket at its tick (``read_sockets``), with the kernel's arrival times,
instead of the event loop waking for each datagram. Voice goes to ``voice``;
tracks whose mid the client marked as music go to ``music``; the room's
clock pops each stream once per tick (reordered, FEC-recovered, concealed).

Outbound: the room hands each Opus payload to ``send``. With ``fast_send``
(the default) an ``sfu.outbound.OutboundStream`` builds, protects and sends
the RTP packet at once (``aiortc_compat.take_sending`` hands it the
transport when aiortc starts the sender; aiortc keeps ICE, DTLS and RTCP) and
the first non-music audio transceiver's ``MixTrack`` stays empty; without it
the payload goes into that ``MixTrack`` for aiortc's ``RTCRtpSender``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription, candidate_from_sdp

from protocol import aiortc_compat
from protocol.playout import UplinkStats
from sfu import metrics
from sfu.errors import BadCandidate, BadOffer
from sfu.ice import announce_public_ip, rtc_configuration
from sfu.inbound import InboundStream
from sfu.outbound import OutboundStream
from sfu.sdp_opus import set_opus_fmtp
from sfu.tracks import MixTrack

logger = logging.getLogger(__name__)

MAX_SDP_CHARS = 64 * 1024
CLIENT_SENDS = frozenset({"sendonly", "sendrecv"})
"""Directions of an offered m-line on which the client sends audio."""


def check_offer_text(sdp: Any) -> None:
    """Cheap checks before aiortc parses anything: is this an SDP offer with audio?"""
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer("offer must be SDP text")
    if len(sdp) > MAX_SDP_CHARS:
        raise BadOffer("offer SDP is too long")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0" or not any(line.startswith("m=") for line in lines):
        raise BadOffer("offer is not SDP (expected 'v=0' and media lines)")
    if not any(line.startswith("m=audio ") for line in lines):
        raise BadOffer("offer has no audio")


def offered_sending(offer_sdp: str) -> tuple[dict[str, bool], list[bool], dict[str, int]]:
    """Which offered audio m-lines the client sends on: by mid, and in order; and the
    Opus payload type of each mid that offers Opus."""
    try:
        parsed = SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser raises assorted types on bad SDP
        raise BadOffer(f"offer rejected: {exc or type(exc).__name__}") from None
    by_mid: dict[str, bool] = {}
    in_order: list[bool] = []
    opus_pts: dict[str, int] = {}
    for media in parsed.media:
        sends = media.direction in CLIENT_SENDS
        in_order.append(sends)
        if media.rtp.muxId:
            by_mid[media.rtp.muxId] = sends
            opus = [c.payloadType for c in media.rtp.codecs
                    if c.mimeType.lower() == "audio/opus" and c.payloadType is not None]
            if opus:
                opus_pts[media.rtp.muxId] = opus[0]
    return by_mid, in_order, opus_pts


def read_sockets() -> int:
    """Read every connected peer's socket (of this event loop) that has datagrams waiting,
    into their streams with the kernel's arrival times (``aiortc_compat.polled``; sockets
    the loop reads are not polled). The rooms' clocks call it at each tick; returns how
    many datagrams were read."""
    return aiortc_compat.poll_sockets()


class Peer:
    """A participant's peer connection: mix out, voice (and music) in.

    The room sees the methods of ``sfu.room.MediaPeer``; aiortc stays in here.
    """

    def __init__(
        self,
        participant_id: str,
        *,
        stun_urls: Collection[str] = (),
        public_ip: str | None = None,
        music_mids: Collection[str] = (),
        on_state: Callable[[Peer, str], None],
        fast_send: bool = True,
        polled_receive: bool = True,
    ) -> None:
        self.participant_id = participant_id
        self.out = MixTrack()
        """aiortc's sender awaits this track (it only carries frames without ``fast_send``)."""
        self.outbound: OutboundStream | None = OutboundStream() if fast_send else None
        self.voice = InboundStream(participant_id)
        self.music: dict[str, InboundStream] = {}
        self.state = "new"
        self._polled = polled_receive and fast_send
        self._connected_at: float | None = None
        self._reports: list[aiortc_compat.ReceiverReport] = []
        """RTCP report blocks about our stream to this participant, since the room took them."""
        self._voice_in: InboundStream | None = None
        """``voice`` once the offer says the client sends voice (else nothing to watch)."""
        self._public_ip = public_ip
        self._music_mids = frozenset(music_mids)
        self._on_state: Callable[[Peer, str], None] | None = on_state
        self._pc = RTCPeerConnection(rtc_configuration(tuple(stun_urls)))
        self._pc.on("connectionstatechange", self._state_changed)

    # --- what the room uses -------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Does this peer take the mix (its outbound track is live)?"""
        return self.out.readyState == "live"

    def send(self, payload: bytes) -> None:
        """Send (or queue for aiortc) one Opus payload: a 20 ms frame of this listener's mix."""
        outbound = self.outbound
        if outbound is not None:
            outbound.send(payload)
        else:
            self.out.push(payload)

    def skip(self, frames: int) -> None:
        """Frames the room's clock skipped: keep the outbound timestamps on the clock."""
        if self.outbound is not None:
            self.outbound.skip(frames)
            return
        for _ in range(frames):
            self.out.skip()

    def last_heard(self) -> float | None:
        """When voice last arrived (or the connection came up), on the loop's clock.

        None while there is nothing to watch: no voice track, not connected,
        or already failed.
        """
        if self.state != "connected" or self._voice_in is None or self._connected_at is None:
            return None
        last = self._voice_in.last_packet_at
        return self._connected_at if last is None else max(last, self._connected_at)

    def take_reports(self) -> list[aiortc_compat.ReceiverReport]:
        """The receiver reports about the mix we send, since the last call (downlink)."""
        reports, self._reports = self._reports, []
        return reports

    def _report(self, report: aiortc_compat.ReceiverReport) -> None:
        self._reports.append(report)
        if self.outbound is not None:  # RED for this listener, from its own loss
            self.outbound.follow_loss(report.fraction_lost, asyncio.get_running_loop().time())

    def take_uplink(self) -> UplinkStats | None:
        """Loss and jitter of the voice we receive since the last call (None: no voice)."""
        return None if self._voice_in is None else self._voice_in.playout.take_stats()

    def fail(self) -> None:
        """The room gave up on this peer (it went silent): stop reporting, count it failed."""
        self.detach()
        self.state = "failed"

    def detach(self) -> None:
        """Stop reporting state (the peer is being replaced or removed on purpose)."""
        self._on_state = None

    # --- aiortc -------------------------------------------------------------------

    def _state_changed(self) -> None:
        if self._on_state is None:
            return  # detached: a replaced or failed peer says nothing more
        state = self._pc.connectionState
        if state in ("failed", "closed") and self.outbound is not None:
            self.outbound.stop()
        if state == "connected" and self._connected_at is None:
            self._connected_at = asyncio.get_running_loop().time()
        self.state = state
        self._on_state(self, state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer; returns the answer SDP with all our candidates."""
        check_offer_text(offer_sdp)
        sends_by_mid, sends_in_order, opus_pts = offered_sending(offer_sdp)
        pc = self._pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises a zoo of types on bad SDP
            logger.debug("rejected offer from %s: %r", self.participant_id, exc)
            raise BadOffer(f"offer rejected: {exc or type(exc).__name__}") from None
        transceivers = pc.getTransceivers()
        audio = [t for t in transceivers if t.kind == "audio"]
        voice = [t for t in audio if t.mid not in self._music_mids]
        if not voice:
            raise BadOffer("offer has no voice audio (every audio m-line is marked music)")
        for index, t in enumerate(transceivers):
            if t.kind != "audio":
                t.direction = "inactive"
                continue
            if t is voice[0]:
                t.sender.replaceTrack(self.out)
                t.direction = "sendrecv"
                aiortc_compat.watch_receiver_reports(t.sender, self._report)
                if self.outbound is not None:
                    aiortc_compat.take_sending(t.sender, self.outbound.counters,
                                               self.outbound.start, polled=self._polled)
            else:
                t.direction = "recvonly"
            mid = str(t.mid) if t.mid is not None else None
            if mid is not None and mid in sends_by_mid:
                client_sends = sends_by_mid[mid]
            else:
                client_sends = index < len(sends_in_order) and sends_in_order[index]
            stream: InboundStream | None = None  # nothing sent here, or a second voice
            if not client_sends:
                pass
            elif mid is not None and mid in self._music_mids:
                stream = self.music.setdefault(
                    mid, InboundStream(f"{self.participant_id}/{mid}"))
            elif t is voice[0]:
                stream = self._voice_in = self.voice
            if stream is not None and mid is not None:
                stream.opus_pt = opus_pts.get(mid)  # for RED's blocks
            aiortc_compat.take_rtp(t.receiver, self._sink(stream),
                                   None if stream is None else _counters(stream))
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            logger.debug("cannot answer %s: %r", self.participant_id, exc)
            raise BadOffer(f"cannot answer this offer: {exc or type(exc).__name__}") from None
        # useinbandfec=1, usedtx=1, stereo=0, maxaveragebitrate: how the client sends to us.
        return announce_public_ip(set_opus_fmtp(pc.localDescription.sdp), self._public_ip)

    def _sink(self, stream: InboundStream | None) -> aiortc_compat.RtpSink:
        """Each packet of one receiver into ``stream`` (on the loop, as it arrives)."""
        if stream is None:
            return _ignore
        loop = asyncio.get_running_loop()

        def sink(rtp: aiortc_compat.InboundRtp, mime: str) -> None:
            at = rtp.arrival_s
            stream.packet(rtp.sequence_number, rtp.timestamp, rtp.payload,
                          loop.time() if at is None else at, mime, rtp.audio_level)

        return sink

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Add a trickled remote candidate; None (or an empty one) ends them."""
        pc = self._pc
        if candidate is None or not candidate.get("candidate"):
            # aiortc ends remote gathering with a None candidate per transport.
            await pc.addIceCandidate(None)
            return
        text = candidate.get("candidate")
        if not isinstance(text, str) or len(text) > 1024:
            raise BadCandidate("candidate must be a string")
        try:
            parsed = candidate_from_sdp(text.removeprefix("a=").removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError) as exc:
            raise BadCandidate(f"malformed candidate: {text[:80]!r}") from exc
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            raise BadCandidate("candidate needs sdpMid or sdpMLineIndex")
        try:
            await pc.addIceCandidate(parsed)
        except Exception as exc:
            raise BadCandidate(f"candidate rejected: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        self.detach()
        if self.outbound is not None:
            self.outbound.stop()
        self.out.stop()
        dropped = 0
        for stream in (self.voice, *self.music.values()):
            c = stream.playout.counters
            dropped += c.late + c.shed
        if dropped:
            metrics.FRAMES_DROPPED.inc(dropped)
        await self._pc.close()


def _counters(stream: InboundStream) -> aiortc_compat.CountersSource:
    """The stream's playout counters, as the receiver's RTCP reports need them."""
    buffer = stream.playout.buffer

    def read() -> aiortc_compat.ReceiveCounters:
        c = buffer.counters
        return aiortc_compat.ReceiveCounters(c.received, c.delivered + c.lost, c.lost,
                                             buffer.highest_seq, buffer.jitter_s)

    return read


def _ignore(packet: aiortc_compat.InboundRtp, mime: str) -> None:
    """Packets on an m-line we do not mix (a second voice track)."""
