"""The fast path's RTCP read, against aiortc's ``RtcpPacket.parse`` on the same bytes."""

from __future__ import annotations

import random

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from protocol.rtcp import Compound, ReportBlock, SenderReport, parse_compound


def _block(ssrc: int, lost: int) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=64, packets_lost=lost,
                            highest_sequence=70_000, jitter=480, lsr=0x12345678, dlsr=65_536)


def _sr(ssrc: int, *blocks: RtcpReceiverInfo) -> RtcpSrPacket:
    info = RtcpSenderInfo(ntp_timestamp=0xE1234567_89ABCDEF, rtp_timestamp=96_000,
                          packet_count=50, octet_count=4_000)
    return RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=list(blocks))


def _sdes(ssrc: int) -> RtcpSdesPacket:
    return RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, b"cname-1234")])])


def _as_aiortc(compound: Compound) -> tuple[list[tuple[int, int]], list[tuple[int, ...]]]:
    return ([(s.ssrc, s.ntp_timestamp) for s in compound.sender_reports],
            [tuple(b) for b in compound.blocks])


def _aiortc_view(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, ...]]]:
    srs, blocks = [], []
    for packet in RtcpPacket.parse(data):
        if isinstance(packet, RtcpSrPacket):
            srs.append((packet.ssrc, packet.sender_info.ntp_timestamp))
        if isinstance(packet, (RtcpSrPacket, RtcpRrPacket)):
            blocks += [(r.ssrc, r.fraction_lost, r.packets_lost, r.highest_sequence, r.jitter,
                        r.lsr, r.dlsr) for r in packet.reports]
    return srs, blocks


def test_a_browser_style_compound_reads_as_aiortc_reads_it() -> None:
    data = (bytes(_sr(0xAAAA, _block(0xBBBB, 3), _block(0xCCCC, -2)))
            + bytes(RtcpRrPacket(ssrc=0xAAAA, reports=[_block(0xDDDD, 0x7FFFFF)]))
            + bytes(_sdes(0xAAAA)))
    compound = parse_compound(data)
    assert compound.handled_here
    assert compound.sender_reports == (SenderReport(0xAAAA, 0xE1234567_89ABCDEF),)
    assert compound.sender_reports[0].lsr == 0x456789AB  # the NTP time's middle 32 bits
    assert compound.blocks[1] == ReportBlock(0xCCCC, 64, -2, 70_000, 480, 0x12345678, 65_536)
    assert _as_aiortc(compound) == _aiortc_view(data)


@pytest.mark.parametrize("other", [
    RtcpByePacket(sources=[0xAAAA]),
    RtcpPsfbPacket(fmt=1, ssrc=0xAAAA, media_ssrc=0xBBBB),
])
def test_bye_and_feedback_are_left_to_aiortc(other: object) -> None:
    compound = parse_compound(bytes(RtcpRrPacket(ssrc=0xAAAA, reports=[_block(1, 0)]))
                              + bytes(other))
    assert not compound.handled_here
    assert parse_compound(bytes(_sr(0xAAAA)) + bytes(_sdes(0xAAAA))).handled_here


def test_padding_is_read_past() -> None:
    rr = bytearray(bytes(RtcpRrPacket(ssrc=7, reports=[_block(9, 1)])))
    rr[0] |= 0x20  # padding bit; four bytes of padding, the last saying how many
    rr += b"\x00\x00\x00\x04"
    rr[2:4] = ((len(rr) - 4) // 4).to_bytes(2, "big")
    assert parse_compound(bytes(rr)).blocks == (ReportBlock(9, 64, 1, 70_000, 480,
                                                            0x12345678, 65_536),)
    assert _as_aiortc(parse_compound(bytes(rr))) == _aiortc_view(bytes(rr))


@pytest.mark.parametrize(("data", "message"), [
    (b"\x81\xc9\x00", "less than 4 bytes"),
    (b"\x41\xc9\x00\x07" + bytes(28), "invalid version"),
    (b"\x81\xc9\x00\x08" + bytes(28), "truncated"),
    (b"\x82\xc9\x00\x07" + bytes(28), "receiver report length"),  # count 2, one block
    (b"\x80\xc8\x00\x05" + bytes(20), "sender report length"),  # no room for sender info
    (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "padding"),  # padding byte says 0
    (b"\xa0\xc9\x00\x00", "padding"),  # padding bit, no body
])
def test_malformed_reports_are_refused_as_aiortc_refuses_them(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_compound(data)
    with pytest.raises(ValueError):
        RtcpPacket.parse(data)


def test_mangled_compounds_are_accepted_or_refused_as_aiortc_does() -> None:
    """Random byte flips, cuts and length edits of a real compound: wherever aiortc
    reads one, the fast path reads the same reports, and it refuses where aiortc does."""
    rng = random.Random(15)
    base = (bytes(_sr(0xAAAA, _block(0xBBBB, 3))) + bytes(_sdes(0xAAAA))
            + bytes(RtcpRrPacket(ssrc=0xAAAA, reports=[_block(0xCCCC, 5)])))
    checked = refused = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            if not data:
                break
            choice = rng.random()
            if choice < 0.4:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.7:
                del data[rng.randrange(len(data)):]
            else:  # a header's count or length
                at = rng.choice([0, 2, 3, 52, 54, 55])
                if at < len(data):
                    data[at] = rng.randrange(256)
        try:
            expected = _aiortc_view(bytes(data))
        except (ValueError, IndexError) as exc:  # aiortc's SDES parse raises IndexError too
            if "SDES" in str(exc) or isinstance(exc, IndexError):
                continue  # an SDES chunk is not read here
            with pytest.raises(ValueError):
                parse_compound(bytes(data))
            refused += 1
            continue
        try:
            got = parse_compound(bytes(data))
        except ValueError:
            pytest.fail(f"aiortc reads {bytes(data).hex()} but the fast path refuses it")
        if all(p in (200, 201, 202) for p in _types(bytes(data))):
            assert _as_aiortc(got) == expected
        checked += 1
    assert checked > 100 and refused > 100


def _types(data: bytes) -> list[int]:
    types, pos = [], 0
    while pos + 4 <= len(data):
        types.append(data[pos + 1])
        pos += 4 + 4 * int.from_bytes(data[pos + 2:pos + 4], "big")
    return types
