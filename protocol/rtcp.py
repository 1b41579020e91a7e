"""What a compound RTCP packet says about timing and loss, read straight from the bytes.

The receive path's RTCP parse (``protocol.aiortc_compat``'s fast path): the
sender reports (RFC 3550 6.4.1: their NTP time, whose middle 32 bits our
receiver reports echo as LSR) and the report blocks (6.4.2: fraction lost,
jitter, LSR/DLSR) of a compound packet, without aiortc's packet objects, the
routing table walk and the statistics records it builds per packet. SDES and
APP are skipped (nothing here reads them; aiortc ignores APP too). BYE and
the feedback messages (RTPFB, PSFB) make ``handled_here`` false: the caller
hands such a packet to aiortc whole. Refuses, with ``ValueError``, what
``aiortc.rtp.RtcpPacket.parse`` refuses in the headers, sender and receiver
reports (bad version, a length past the end, bad padding, a report whose
length is not its count's); an SDES chunk is not checked.
Pure.
"""

from __future__ import annotations

from typing import NamedTuple

RTCP_HEADER_BYTES = 4
SR = 200
RR = 201
BYE = 203
RTPFB = 205
PSFB = 206
NEEDS_AIORTC = frozenset({BYE, RTPFB, PSFB})
SENDER_INFO_BYTES = 20
REPORT_BLOCK_BYTES = 24


class ReportBlock(NamedTuple):
    """One reception report block (RFC 3550 6.4.1): what the reporter saw of ``ssrc``."""

    ssrc: int
    fraction_lost: int
    """Share lost since the reporter's previous report, in 1/256."""
    packets_lost: int
    """Cumulative, signed (24 bits)."""
    highest_sequence: int
    jitter: int
    """Interarrival jitter, in RTP timestamp units."""
    lsr: int
    """Middle 32 bits of the NTP time of the last sender report it had from ``ssrc``."""
    dlsr: int
    """Its delay since that report, in 1/65536 s."""


class SenderReport(NamedTuple):
    ssrc: int
    ntp_timestamp: int
    """64-bit NTP time of the report."""

    @property
    def lsr(self) -> int:
        """Its middle 32 bits: what a receiver report about ``ssrc`` echoes as LSR."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


class Compound(NamedTuple):
    sender_reports: tuple[SenderReport, ...]
    blocks: tuple[ReportBlock, ...]
    handled_here: bool
    """No BYE or feedback inside: nothing in it needs aiortc."""


def parse_compound(data: bytes) -> Compound:
    """Read one (unprotected) compound RTCP packet; ``ValueError`` for a malformed one."""
    srs: list[SenderReport] = []
    blocks: list[ReportBlock] = []
    handled = True
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < RTCP_HEADER_BYTES:
            raise ValueError("RTCP packet length is less than 4 bytes")
        first = data[pos]
        if first >> 6 != 2:
            raise ValueError("RTCP packet has invalid version")
        packet_type = data[pos + 1]
        end = pos + RTCP_HEADER_BYTES + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if end > n:
            raise ValueError("RTCP packet is truncated")
        body_end = end
        if first & 0x20:
            padding = data[end - 1] if end > pos + RTCP_HEADER_BYTES else 0
            if not padding or padding > end - pos - RTCP_HEADER_BYTES:
                raise ValueError("RTCP packet padding length is invalid")
            body_end = end - padding
        count = first & 0x1F
        body = pos + RTCP_HEADER_BYTES
        if packet_type == SR:
            if body_end - body != 4 + SENDER_INFO_BYTES + count * REPORT_BLOCK_BYTES:
                raise ValueError("RTCP sender report length is invalid")
            srs.append(SenderReport(int.from_bytes(data[body:body + 4], "big"),
                                    int.from_bytes(data[body + 4:body + 12], "big")))
            _blocks(data, body + 4 + SENDER_INFO_BYTES, count, blocks)
        elif packet_type == RR:
            if body_end - body != 4 + count * REPORT_BLOCK_BYTES:
                raise ValueError("RTCP receiver report length is invalid")
            _blocks(data, body + 4, count, blocks)
        elif packet_type in NEEDS_AIORTC:
            handled = False
        pos = end
    return Compound(tuple(srs), tuple(blocks), handled)


def _blocks(data: bytes, pos: int, count: int, into: list[ReportBlock]) -> None:
    for _ in range(count):
        lost = int.from_bytes(data[pos + 5:pos + 8], "big", signed=True)
        into.append(ReportBlock(
            int.from_bytes(data[pos:pos + 4], "big"),
            data[pos + 4],
            lost,
            int.from_bytes(data[pos + 8:pos + 12], "big"),
            int.from_bytes(data[pos + 12:pos + 16], "big"),
            int.from_bytes(data[pos + 16:pos + 20], "big"),
            int.from_bytes(data[pos + 20:pos + 24], "big"),
        ))
        pos += REPORT_BLOCK_BYTES
