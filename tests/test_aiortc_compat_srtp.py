"""``aiortc_compat.srtp.DirectSrtp``: libsrtp through pylibsrtp's binding, the same bytes."""

from __future__ import annotations

import pylibsrtp
import pytest
from aiortc.rtp import RtpPacket

from protocol.aiortc_compat import CompatError
from protocol.aiortc_compat.srtp import BUFFER_BYTES, DirectSrtp

PROFILES = {
    "aes128-cm-sha1-80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "aead-aes-128-gcm": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
}


def _session(profile: str, direction: int) -> pylibsrtp.Session:
    kind, key_bytes = PROFILES[profile]
    key = bytes(range(7, 7 + key_bytes))
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=kind))


def _packets(n: int) -> list[bytes]:
    """RTP packets across a sequence-number wrap, payloads of several sizes."""
    return [RtpPacket(payload_type=111, sequence_number=(65_500 + i) % 65_536,
                      timestamp=960 * i, ssrc=0x1234_5678,
                      payload=bytes([i % 251]) * (1 + i % 160)).serialize() for i in range(n)]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_direct_protect_puts_the_same_bytes_as_the_session(profile: str) -> None:
    ours = DirectSrtp(_session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    theirs = _session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    for plain in _packets(100):
        protected = ours.protect(plain)
        assert protected == theirs.protect(plain)
        assert len(protected) > len(plain)
    with pytest.raises(ValueError, match="too long"):
        ours.protect(bytes(BUFFER_BYTES))


@pytest.mark.parametrize("profile", list(PROFILES))
def test_direct_unprotect_reads_what_was_protected_and_drops_forgeries_and_replays(
        profile: str) -> None:
    sender = _session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = _session(profile, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    ours = DirectSrtp(session)
    packets = _packets(60)
    protected = [sender.protect(p) for p in packets]
    for plain, wire in zip(packets[:30], protected[:30], strict=True):
        assert ours.unprotect(wire) == plain
    assert ours.unprotect(protected[5]) is None  # a replay
    forged = bytearray(protected[30])
    forged[20] ^= 0x01
    assert ours.unprotect(bytes(forged)) is None
    assert ours.unprotect(bytes(BUFFER_BYTES + 1)) is None
    # the session's own calls share the state: its replay window sees ours, ours sees its
    assert session.unprotect(protected[30]) == packets[30]
    assert ours.unprotect(protected[30]) is None
    with pytest.raises(pylibsrtp.Error):
        session.unprotect(protected[29])
    for plain, wire in zip(packets[31:], protected[31:], strict=True):
        assert ours.unprotect(wire) == plain


def test_a_session_without_its_srtp_t_is_refused() -> None:
    session = _session("aes128-cm-sha1-80", pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    kept = session._srtp
    session._srtp = None  # type: ignore[assignment]
    try:
        with pytest.raises(CompatError, match="_srtp"):
            DirectSrtp(session)
    finally:
        session._srtp = kept
