"""SRTP for the fast paths: libsrtp called through pylibsrtp's own cffi binding, per packet.

aiortc keeps its DTLS-derived keys in two ``pylibsrtp.Session`` objects (the DTLS
transport's private ``_rx_srtp`` and ``_tx_srtp``). ``Session.protect`` and
``unprotect`` are a few lines of Python around one libsrtp call: a type check,
a new ``int *`` allocated per call, a copy into the session's buffer, the call,
an error check and a slice. In the room's profile that Python cost more than
libsrtp itself (5.4 % of the server's samples in ``protect``, 1.8 % of them in
``srtp_protect``; the same split for ``unprotect``), at 2,000 packets a second
each way at N = 40.

``DirectSrtp`` wraps one such session and calls ``srtp_protect`` /
``srtp_unprotect`` on the session's ``srtp_t`` (its private ``_srtp``) with a
buffer and length of its own, allocated once: the same libsrtp state, so
sequence numbers, rollover counts and replay windows are those aiortc's own
calls on the session see (RTCP still goes through the session's methods).
``tests/test_aiortc_compat_srtp.py`` checks that both give the same bytes.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from pylibsrtp import _binding

from protocol.aiortc_compat.negotiation import CompatError

BUFFER_BYTES = 1500
"""The largest packet either way, trailer included (pylibsrtp's own buffer size)."""
_TRAILER_BYTES = pylibsrtp.SRTP_MAX_TRAILER_LEN
_OK = _binding.lib.srtp_err_status_ok


class DirectSrtp:
    """``protect`` and ``unprotect`` of RTP on one ``pylibsrtp.Session``, without its
    per-call Python (the session is kept alive here: it owns the ``srtp_t``)."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        pointer: Any = getattr(session, "_srtp", None)
        if pointer is None or _binding.ffi.typeof(pointer) is not _binding.ffi.typeof("srtp_t *"):
            raise CompatError(
                "pylibsrtp's Session no longer keeps its srtp_t in _srtp; the direct "
                "SRTP calls cannot be used (supported: pylibsrtp 1.0.x)"
            )
        ffi = _binding.ffi
        self.session = session
        self._ctx = pointer[0]
        self._cdata = ffi.new("char[]", BUFFER_BYTES)
        self._buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")
        self._protect = _binding.lib.srtp_protect
        self._unprotect = _binding.lib.srtp_unprotect
        self._unprotect_rtcp = _binding.lib.srtp_unprotect_rtcp

    def protect(self, packet: bytes) -> bytes:
        """SRTP-protect one RTP packet (``pylibsrtp.Error`` as ``Session.protect`` raises)."""
        n = len(packet)
        if n > BUFFER_BYTES - _TRAILER_BYTES:
            raise ValueError("packet is too long")
        self._buffer[0:n] = packet
        length = self._length
        length[0] = n
        rc = self._protect(self._ctx, self._cdata, length)
        if rc != _OK:
            raise pylibsrtp.Error(pylibsrtp.ERRORS[rc])
        return self._buffer[0:length[0]]

    def unprotect(self, packet: bytes, *, rtcp: bool = False) -> bytes | None:
        """The RTP packet inside one SRTP packet (``rtcp``: the compound RTCP packet
        inside one SRTCP packet); None if it fails to authenticate, is a replay, or is
        too long (aiortc drops those)."""
        n = len(packet)
        if n > BUFFER_BYTES:
            return None
        self._buffer[0:n] = packet
        length = self._length
        length[0] = n
        call = self._unprotect_rtcp if rtcp else self._unprotect
        if call(self._ctx, self._cdata, length) != _OK:
            return None
        return self._buffer[0:length[0]]
