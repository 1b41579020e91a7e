"""Every reach into aiortc's and aioice's private parts, in this one package.

The patches are installed once per process by ``install()`` (the server's
composition root, the desktop client's start, the tests' setup); it is
idempotent, and it raises ``CompatError`` at once if an installed aiortc or
aioice no longer has the private part a patch relies on, instead of warning
and quietly running without it. Each module's docstring says what it patches
and why:

``negotiation``
    What aioice gathers and aiortc answers: the host addresses offered as ICE
    candidates (``set_host_addresses``), the UDP port range they bind in
    (``set_port_range``), RED in aiortc's codec table (``accept_red``), the
    offer's payload types kept in the answer
    (``answer_offered_payload_types``), the check on aioice's gathering; the
    ICE reads for tests (``ice_connection``, ``nominated_local_candidate``,
    ``go_silent``); and what the other two share (``CompatError``,
    ``RTP_CLOCK_HZ``). It imports neither of them.

``receive``
    The inbound path: the RFC 7983 demux in front of aioice's STUN parse,
    ``take_rtp`` (aiortc's jitter buffer swapped for a tap, then the fast path
    from aioice's socket callback straight to the sink), the receiver-report
    statistics read from the sink's counters (``ReceiveCounters``), and
    ``tap_plaintext_rtp`` for tests.

``polled``
    The polled socket: once DTLS is up, the nominated host pair's socket is
    taken from the event loop (``take_socket``, through ``take_sending``'s
    ``polled``) and read at each tick (``poll_sockets``: the ready ones, every
    datagram with the kernel's receive time); the loop no longer wakes per packet.
``srtp``
    ``DirectSrtp``: libsrtp's protect and unprotect called on one of aiortc's
    ``pylibsrtp.Session`` objects (its private ``srtp_t``) with a buffer of
    its own, without the session's per-call Python; both fast paths use it.
``send``
    The outbound path, one ``RTCRtpSender`` at a time: ``take_sending`` (a
    ``SendTarget`` to send RTP without aiortc's sender loop, its sender
    reports read from ``SendCounters``) and ``send_audio_level`` (RFC 6464
    levels on pre-encoded packets).
``rtcp``
    RTCP on the fast path: ``handle_rtcp`` reads what the receive path
    unprotected (``protocol.rtcp``) and keeps aiortc's LSR and RTT records;
    ``watch_receiver_reports`` (the far end's reports about our stream, as
    ``ReceiverReport``, from either path).

This ``__init__`` puts them together: ``install``/``uninstall``, and every
public name of the six, so callers write ``aiortc_compat.take_rtp`` or
``from protocol.aiortc_compat import SendTarget`` without knowing which module
holds it. A test that monkeypatches a module-level name patches the module
that reads it (``protocol.aiortc_compat.negotiation.chosen_host_addresses``,
``protocol.aiortc_compat.receive._AIOICE_DATAGRAM_RECEIVED``): a name bound
here is a copy. (``chosen_host_addresses`` and ``chosen_port_range``, read
here, are looked up in ``negotiation`` at each read, so they are never stale.)

This package lives in ``protocol/`` because it is the one leaf package that the
server (``sfu``, ``signaling``) and the desktop client may both import: it
imports nothing but aiortc, aioice and pylibsrtp (aiortc's SRTP). ``tests/test_aiortc_compat*.py``
(``install`` in ``test_aiortc_compat.py``, then one file per module) have a test
per patch that fails if it stops taking; ``pyproject.toml`` pins aiortc and
aioice to the minor versions those tests ran on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aioice.ice
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from protocol.aiortc_compat import negotiation, receive
from protocol.aiortc_compat.negotiation import (
    OFFERED_DYNAMIC_PAYLOAD_TYPES,
    RED_CODEC,
    RED_MIME,
    RTP_CLOCK_HZ,
    CompatError,
    accept_red,
    answer_offered_payload_types,
    check_aioice_gathering,
    go_silent,
    ice_connection,
    installed,
    nominated_local_candidate,
    set_host_addresses,
    set_port_range,
)
from protocol.aiortc_compat.polled import PolledSocket, poll_sockets
from protocol.aiortc_compat.receive import (
    CountersSource,
    InboundRtp,
    ReceiveCounters,
    RtpSink,
    check_aioice_demux,
    check_receive_path,
    check_receiver_class,
    fast_path_packets,
    take_rtp,
    tap_plaintext_rtp,
)
from protocol.aiortc_compat.rtcp import (
    ReceiverReport,
    ReportSink,
    check_rtcp_handlers,
    handle_rtcp,
    sender_rtt,
    watch_receiver_reports,
)
from protocol.aiortc_compat.send import (
    NTP_UNIX_OFFSET_S,
    Datagram,
    SendCounters,
    SendReady,
    SendTarget,
    check_sender_class,
    header_extension_block,
    send_audio_level,
    send_target,
    take_sending,
)

if TYPE_CHECKING:
    from protocol.aiortc_compat.negotiation import chosen_host_addresses, chosen_port_range

__all__ = [
    "NTP_UNIX_OFFSET_S",
    "OFFERED_DYNAMIC_PAYLOAD_TYPES",
    "RED_CODEC",
    "RED_MIME",
    "RTP_CLOCK_HZ",
    "CompatError",
    "CountersSource",
    "Datagram",
    "InboundRtp",
    "PolledSocket",
    "ReceiveCounters",
    "ReceiverReport",
    "ReportSink",
    "RtpSink",
    "SendCounters",
    "SendReady",
    "SendTarget",
    "accept_red",
    "answer_offered_payload_types",
    "check_aioice_demux",
    "check_aioice_gathering",
    "check_receive_path",
    "check_receiver_class",
    "check_rtcp_handlers",
    "check_sender_class",
    "chosen_host_addresses",
    "chosen_port_range",
    "fast_path_packets",
    "go_silent",
    "handle_rtcp",
    "header_extension_block",
    "ice_connection",
    "install",
    "installed",
    "nominated_local_candidate",
    "poll_sockets",
    "send_audio_level",
    "send_target",
    "sender_rtt",
    "set_host_addresses",
    "set_port_range",
    "take_rtp",
    "take_sending",
    "tap_plaintext_rtp",
    "uninstall",
    "watch_receiver_reports",
]

logger = logging.getLogger(__name__)


if not TYPE_CHECKING:  # mypy sees the two names imported above, and no catch-all

    def __getattr__(name: str) -> Any:
        """``chosen_host_addresses`` and ``chosen_port_range`` as they are now in
        ``negotiation`` (``set_host_addresses`` and ``set_port_range`` rebind them there;
        a copy bound here at import would go stale)."""
        if name in ("chosen_host_addresses", "chosen_port_range"):
            return getattr(negotiation, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- install -------------------------------------------------------------------------


def install() -> None:
    """Check every private part this package uses and patch aioice (idempotent).

    Raises ``CompatError`` naming what is missing: the server or client must
    not start with a patch that silently does nothing.
    """
    check_receiver_class(RTCRtpReceiver)
    check_sender_class(RTCRtpSender)
    check_rtcp_handlers()
    accept_red()
    answer_offered_payload_types()
    if installed():
        return
    check_aioice_gathering()
    check_aioice_demux()
    aioice.ice.get_host_addresses = negotiation._host_addresses
    aioice.ice.asyncio = negotiation._AsyncioInRange()  # type: ignore[assignment]
    aioice.ice.StunProtocol.datagram_received = (  # type: ignore[method-assign]
        receive._datagram_received)
    logger.debug("aiortc/aioice patches installed")


def uninstall() -> None:
    """Put aioice's function and asyncio back (for tests of ``install`` itself)."""
    aioice.ice.get_host_addresses = negotiation._AIOICE_GET_HOST_ADDRESSES
    aioice.ice.asyncio = negotiation._AIOICE_ASYNCIO
    aioice.ice.StunProtocol.datagram_received = (  # type: ignore[method-assign]
        receive._AIOICE_DATAGRAM_RECEIVED)
