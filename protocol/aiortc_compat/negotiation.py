"""What aioice gathers and what aiortc answers, and the parts the other modules share.

The process-wide patches ``install`` puts in (``protocol.aiortc_compat``), and
the ICE reads for tests; ``CompatError``, ``RTP_CLOCK_HZ`` and the private-part
check ``_code_names`` are here for ``receive`` and ``send`` too (this module
imports neither):

``get_host_addresses``
    aioice gathers host candidates from the module-level function
    ``aioice.ice.get_host_addresses``, which lists every interface except
    127.0.0.1, and has no per-connection option. ``install`` replaces it with
    one that offers ``chosen_host_addresses`` when set (the server's
    ``DISCO_RTC_HOST_ADDRESSES``; 127.0.0.1 for a client of a loopback server,
    and in tests) and otherwise defers to aioice's own. Change the choice with
    ``set_host_addresses``; nothing re-patches aioice.

``asyncio`` in ``aioice.ice`` (the media port range)
    aioice binds every host candidate's UDP socket to port 0 (any port), with
    no option for a range. ``install`` gives ``aioice.ice`` a view of asyncio
    whose running loop binds those sockets inside ``chosen_port_range`` when
    one is set (``DISCO_RTC_PORT_MIN``/``_MAX``: the UDP ports an operator
    opens in a firewall), trying the range's ports from a random start; any
    other use of asyncio passes straight through. ``set_port_range`` chooses.

``accept_red`` (process-wide, called by ``install``)
    aiortc's audio codec table (``aiortc.codecs.CODECS``) has no RED (RFC
    2198), so an offer's ``red/48000/2`` (Chrome offers it after Opus) is
    dropped from the answer. ``install`` appends ``RED_CODEC`` to that table:
    the answer then accepts RED when offered, and ``take_rtp`` hands RED
    packets to the sink with ``audio/red``. aiortc sends with the first
    codec the offer lists; browsers list Opus first.

``answer_offered_payload_types`` (process-wide, called by ``install``)
    aiortc keeps an offer's payload type in its answer only in 96-127;
    Chrome offers RED lower once those run out. ``install`` widens the range
    to ``OFFERED_DYNAMIC_PAYLOAD_TYPES``.

Two reads, for tests: ``nominated_local_candidate`` (which path ICE chose:
host or relay) and ``go_silent`` (close a peer's sockets with no goodbye, as
a phone leaving coverage does), both through the aioice ``Connection`` that
aiortc keeps privately under its ``RTCIceTransport``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
from collections.abc import Sequence
from types import FunctionType
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.rtp
from aioice.candidate import Candidate
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

logger = logging.getLogger(__name__)

RTP_CLOCK_HZ = 48_000
"""The clock of the Opus (and RED) streams whose report jitter is converted to seconds."""
_AIOICE_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses

_AIOICE_ASYNCIO = aioice.ice.asyncio

RED_MIME = "audio/red"
RED_CODEC = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48_000, channels=2,
                                  payloadType=63)
"""RFC 2198 redundancy around Opus, as Chrome offers it (its PT is taken from the offer)."""

chosen_host_addresses: tuple[str, ...] = ()
"""The host candidates aioice offers; () = aioice's own choice (all but loopback).

Set it with ``set_host_addresses``; tests may ``monkeypatch.setattr`` it.
"""

chosen_port_range: tuple[int, int] | None = None
"""The UDP ports (first, last) host candidates bind within; None = any port (aioice's own).

Set it with ``set_port_range``.
"""


class CompatError(RuntimeError):
    """aiortc or aioice changed a private part a patch relies on: pin or update this module."""


# --- install (``install`` and ``uninstall`` are in ``protocol.aiortc_compat``) -----------


def installed() -> bool:
    return getattr(aioice.ice, "get_host_addresses", None) is _host_addresses


def _code_names(fn: object) -> set[str]:
    code = getattr(fn, "__code__", None)
    return set(code.co_names) if code is not None else set()


def accept_red() -> None:
    """Put RED in aiortc's audio codec table, after its own codecs (idempotent)."""
    table = getattr(aiortc.codecs, "CODECS", None)
    audio = table.get("audio") if isinstance(table, dict) else None
    if not isinstance(audio, list) or not all(
        isinstance(c, RTCRtpCodecParameters) for c in audio
    ):
        raise CompatError(
            "aiortc.codecs.CODECS['audio'] is not a list of RTCRtpCodecParameters; RED "
            "cannot be negotiated (supported: aiortc 1.16.x)"
        )
    if not any(c.mimeType.lower() == RED_MIME for c in audio):
        audio.append(RED_CODEC)


def check_aioice_gathering() -> None:
    """aioice still looks ``get_host_addresses`` up in ``aioice.ice`` when gathering."""
    current = getattr(aioice.ice, "get_host_addresses", None)
    gather = getattr(getattr(aioice.ice, "Connection", None), "gather_candidates", None)
    if not callable(current) or not isinstance(gather, FunctionType):
        raise CompatError(
            "aioice.ice has no get_host_addresses / Connection.gather_candidates; the "
            "host-address choice cannot be installed (supported: aioice 0.13.x)"
        )
    if "get_host_addresses" not in _code_names(gather) or gather.__globals__ is not vars(
        aioice.ice
    ):
        raise CompatError(
            "aioice's Connection.gather_candidates no longer calls aioice.ice."
            "get_host_addresses; replacing it would not change the host candidates"
        )
    binds = getattr(aioice.ice.Connection, "get_component_candidates", None)
    names = _code_names(binds)
    seen = getattr(aioice.ice, "asyncio", None)
    if (not isinstance(binds, FunctionType) or binds.__globals__ is not vars(aioice.ice)
            or not {"get_running_loop", "create_datagram_endpoint"} <= names
            or not (seen is asyncio or isinstance(seen, _AsyncioInRange))):
        raise CompatError(
            "aioice's Connection.get_component_candidates no longer binds host sockets "
            "through asyncio.get_running_loop().create_datagram_endpoint; the media port "
            "range cannot be installed (supported: aioice 0.13.x)"
        )


# --- host candidates -----------------------------------------------------------------


def set_host_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Offer exactly ``addresses`` as host candidates (process-wide); () = aioice's default.

    Returns the previous choice. Raises ``CompatError`` before ``install()``
    (the choice would be silently ignored) and ``ValueError`` for a bad address.
    """
    global chosen_host_addresses
    if not installed():
        raise CompatError("call aiortc_compat.install() before set_host_addresses()")
    chosen = tuple(str(ipaddress.ip_address(str(a).strip())) for a in addresses)
    previous, chosen_host_addresses = chosen_host_addresses, chosen
    if chosen:
        logger.info("ICE host candidates limited to %s", ", ".join(chosen))
    return previous


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = chosen_host_addresses
    if not chosen:
        return list(_AIOICE_GET_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [a for a in chosen if (use_ipv6 if ipaddress.ip_address(a).version == 6 else use_ipv4)]


# --- media port range ---------------------------------------------------------------------


def set_port_range(first: int | None, last: int | None) -> tuple[int, int] | None:
    """Bind host candidates within [first, last] (process-wide); None, None = any port.

    Returns the previous range. Raises ``CompatError`` before ``install()``
    and ``ValueError`` for a range that is not 1024..65535, first <= last.
    """
    global chosen_port_range
    if not installed():
        raise CompatError("call aiortc_compat.install() before set_port_range()")
    chosen: tuple[int, int] | None = None
    if first is not None or last is not None:
        if first is None or last is None or not 1024 <= first <= last <= 65535:
            raise ValueError(f"a UDP port range is 1024 <= first <= last <= 65535, "
                             f"got {first}..{last}")
        chosen = (first, last)
        logger.info("ICE host candidates bind UDP ports %d-%d", first, last)
    previous, chosen_port_range = chosen_port_range, chosen
    return previous


class _LoopInRange:
    """The running loop, but host sockets asked for port 0 bind inside the chosen range."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, protocol_factory: Any, local_addr: Any = None,
                                       **kwargs: Any) -> Any:
        span = chosen_port_range
        if span is None or local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, **kwargs)
        first, last = span
        count = last - first + 1
        start = random.randrange(count)
        for i in range(count):
            port = first + (start + i) % count
            try:
                return await self._loop.create_datagram_endpoint(
                    protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE,
                      f"every UDP port in {first}-{last} on {local_addr[0]} is in use")


class _AsyncioInRange:
    """``asyncio`` as ``aioice.ice`` sees it: the same, but for ``get_running_loop``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> Any:
        return _LoopInRange(asyncio.get_running_loop())


OFFERED_DYNAMIC_PAYLOAD_TYPES = tuple(range(35, 64)) + tuple(range(96, 128))
"""Payload types an answer takes from the offer: RFC 3551's dynamic 96-127, and 35-63,
where Chrome puts codecs (RED among them) once 96-127 run out."""


def answer_offered_payload_types() -> None:
    """aiortc answers a codec with the offer's payload type only if it is in 96-127
    (``aiortc.rtp.DYNAMIC_PAYLOAD_TYPES``, read by ``find_common_codecs``); a RED offered
    at 40 was answered at our table's 63, and RED sent at 63 would not be understood.
    Widen it to ``OFFERED_DYNAMIC_PAYLOAD_TYPES`` (idempotent; called by ``install``)."""
    current = getattr(aiortc.rtp, "DYNAMIC_PAYLOAD_TYPES", None)
    if not isinstance(current, (range, tuple)) or 96 not in current:
        raise CompatError("aiortc.rtp.DYNAMIC_PAYLOAD_TYPES is gone or changed; offered "
                          "payload types cannot be kept (supported: aiortc 1.16.x)")
    aiortc.rtp.DYNAMIC_PAYLOAD_TYPES = OFFERED_DYNAMIC_PAYLOAD_TYPES  # type: ignore[assignment]


# --- ICE internals (for tests) ------------------------------------------------------------


def ice_connection(transport: RTCIceTransport) -> aioice.ice.Connection:
    """The aioice connection aiortc keeps under ``transport`` (its private ``_connection``)."""
    connection = getattr(transport, "_connection", None)
    if not isinstance(connection, aioice.ice.Connection):
        raise CompatError(
            f"RTCIceTransport has no aioice Connection in _connection: found "
            f"{type(connection).__name__}"
        )
    return connection


def nominated_local_candidate(transport: RTCIceTransport, component: int = 1) -> Candidate | None:
    """Our side of the candidate pair ICE nominated (None before it has)."""
    nominated = getattr(ice_connection(transport), "_nominated", None)
    if not isinstance(nominated, dict):
        raise CompatError("aioice's Connection has no _nominated pairs (dict)")
    pair = nominated.get(component)
    return None if pair is None else pair.local_candidate


def go_silent(transport: RTCIceTransport) -> None:
    """Close ``transport``'s UDP sockets with no DTLS close or RTCP BYE: a vanished peer."""
    connection = ice_connection(transport)
    protocols = getattr(connection, "_protocols", None)
    if not isinstance(protocols, list):
        raise CompatError("aioice's Connection has no _protocols (list)")

    async def drop(data: bytes) -> None:
        return None

    setattr(connection, "send", drop)  # noqa: B010 (an instance attribute over a method)
    for protocol in list(protocols):
        udp = getattr(protocol, "transport", None)
        if udp is not None:
            udp.close()
