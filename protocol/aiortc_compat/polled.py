"""The polled socket: a connected peer's UDP socket read once a tick, not once a packet.

aioice's host sockets are the event loop's: each datagram that arrives wakes
the loop (``epoll_wait``, a context switch, uvloop's read, its call into
Python). A room's members each send 50 packets a second at their own phase, so
a room of 40 woke the loop ~1,800 times a second, and those wake-ups were the
largest single cost left in the kernel's share of a voice node (``perf``: the
scheduler's switch and unlock, ~16 % of the node's samples).

Nothing needs those packets before the room's next tick: the playout buffer
decides at the tick, whenever a packet came in. ``take_socket`` therefore takes
the nominated host pair's socket from the loop once DTLS is up (a duplicate of
its descriptor, after the loop's transport is closed: the socket stays open and
bound, ICE and DTLS never notice) and hands back a ``PolledSocket``. Each room's
clock calls ``poll_sockets`` at the start of its tick: one ``epoll_wait`` that
does not block, over every polled socket of the event loop, then each ready
socket's datagrams, each with the time the kernel received it
(``SO_TIMESTAMPNS``), so the jitter the playout buffer measures is the
network's, not the tick's. (A socket of another room's peer that is ready is
read too: early is harmless, the arrival time is the kernel's. Reading every
socket without asking which are ready would cost a failed ``recvmsg`` per
silent peer and tick: 10,000 a second in a room of 200 in DTX.) SRTP of a routed SSRC goes to the
receive fast path with that time; everything else (STUN consent checks, RTCP,
DTLS) goes to aioice's protocol as the loop would have handed it, at most a
tick later. Sending goes out on the same socket.

Only on Linux (the timestamp's socket option and its layout), and only for a
host pair: a TURN relay's socket carries other allocations' traffic and stays
the loop's. The kernel stamps datagrams on the wall clock; each poll converts
with the offset between the wall clock and the loop's at that moment, so a step
of the wall clock (NTP) shifts the few datagrams read across it by that step:
one outlier in each sender's jitter window.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
import sys
import time
import weakref
from typing import Any

import aioice.ice

from protocol.aiortc_compat.negotiation import CompatError

logger = logging.getLogger(__name__)

SO_TIMESTAMPNS = 35
"""Linux's ``SO_TIMESTAMPNS`` (and ``SCM_TIMESTAMPNS``): the kernel's receive time,
a ``struct timespec`` per datagram (Python's ``socket`` module does not name it)."""
_TIMESPEC = struct.Struct("@qq")
RECV_BYTES = 2048
"""Larger than any datagram a peer sends (an MTU-sized packet is 1,500 bytes)."""
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
MAX_ROUNDS_PER_POLL = 64
"""Datagrams read from one socket in one poll, at most (a member sends one a tick): a
flood waits for the next tick, and cannot starve the other members' sockets."""


def supported() -> bool:
    """Can this platform read kernel receive times (``SO_TIMESTAMPNS``)?"""
    return sys.platform == "linux" and struct.calcsize("@l") == 8


class PolledSocket(asyncio.DatagramTransport):
    """One peer's UDP socket, read when ``poll`` is called (aioice's protocol's transport).

    ``fast`` is the receive fast path (``receive._FastPath``) of the connection:
    its ``take(data, arrival)`` returns False for what is not a routed SSRC's SRTP,
    which then goes to ``protocol.datagram_received``.
    """

    def __init__(self, sock: socket.socket, protocol: aioice.ice.StunProtocol,
                 fast: Any) -> None:
        super().__init__()
        self._sock = sock
        self._protocol = protocol
        self._fast = fast
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._sockname = sock.getsockname()
        self._poller = _poller(self._loop)
        self._poller.add(self)

    # --- asyncio.DatagramTransport ---------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # the send buffer is full: a datagram lost, as on the wire
        except OSError as exc:
            self._protocol.error_received(exc)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._poller.remove(self)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sockname
        if name == "socket":
            return self._sock
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    @property
    def socket(self) -> socket.socket:
        """The socket itself (the send path sends on it directly)."""
        return self._sock

    # --- the room's tick ---------------------------------------------------------------

    def read_one(self, offset: float) -> bool:
        """Read one waiting datagram, if there is one, and hand it on (False: none).

        ``offset`` is the loop's clock minus the wall clock, for the arrival time.
        """
        if self._closing:
            return False
        try:
            data, ancillary, _flags, addr = self._sock.recvmsg(RECV_BYTES, _ANC_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # e.g. an ICMP error queued on the socket
            self._protocol.error_received(exc)
            return False
        arrival = None
        if ancillary:  # the one control message asked for: SCM_TIMESTAMPNS
            seconds, nanoseconds = _TIMESPEC.unpack(ancillary[0][2])
            arrival = seconds + nanoseconds * 1e-9 + offset
        if not self._fast.take(data, arrival):
            self._protocol.datagram_received(data, addr)
        return True


class _Poller:
    """The polled sockets of one event loop, behind one epoll set."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._sockets: dict[int, PolledSocket] = {}

    def add(self, polled: PolledSocket) -> None:
        fd = polled.socket.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._sockets[fd] = polled

    def remove(self, polled: PolledSocket) -> None:
        fd = polled.socket.fileno()
        if self._sockets.get(fd) is polled:
            del self._sockets[fd]
            self._epoll.unregister(fd)

    def poll(self) -> int:
        """Rounds of: which sockets are ready (one ``epoll_wait``), one datagram from
        each; until none is. A member's socket holds one packet a tick, so this costs a
        ``recvmsg`` per packet and one more ``epoll_wait``, not a failed ``recvmsg`` per
        socket; a socket flooded beyond ``MAX_ROUNDS_PER_POLL`` waits for the next tick."""
        sockets = self._sockets
        if not sockets:
            return 0
        offset = self._loop.time() - time.time()
        n = 0
        for _ in range(MAX_ROUNDS_PER_POLL):
            ready = self._epoll.poll(0)
            if not ready:
                break
            for fd, _events in ready:
                polled = sockets.get(fd)
                if polled is not None and polled.read_one(offset):
                    n += 1
        return n

    def close(self) -> None:
        self._epoll.close()


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = (
    weakref.WeakKeyDictionary())


def _poller(loop: asyncio.AbstractEventLoop) -> _Poller:
    poller = _POLLERS.get(loop)
    if poller is None:
        poller = _POLLERS[loop] = _Poller(loop)
        weakref.finalize(loop, poller.close)
    return poller


def poll_sockets() -> int:
    """Read every polled socket of the running loop that has datagrams waiting (never
    blocks); returns how many datagrams were read. The rooms' clocks call it each tick."""
    poller = _POLLERS.get(asyncio.get_running_loop())
    return 0 if poller is None else poller.poll()


def take_socket(protocol: aioice.ice.StunProtocol, fast: Any) -> PolledSocket:
    """Take ``protocol``'s socket from the event loop: a ``PolledSocket`` reads it from now.

    Raises ``CompatError`` if the platform cannot time datagrams or the protocol's
    transport has no socket.
    """
    if not supported():
        raise CompatError("polled sockets need Linux's SO_TIMESTAMPNS")
    old = getattr(protocol, "transport", None)
    # duck-typed: uvloop's transports are not asyncio.BaseTransport subclasses
    extra_info = getattr(old, "get_extra_info", None)
    raw = extra_info("socket") if callable(extra_info) else None
    fileno = getattr(raw, "fileno", None)
    if old is None or not callable(fileno) or fileno() < 0:
        raise CompatError(f"aioice's protocol has no transport with a socket to take "
                          f"(found {type(old).__name__})")
    family = getattr(raw, "family", socket.AF_INET)
    sock = socket.fromfd(fileno(), family, socket.SOCK_DGRAM)  # a duplicate descriptor
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        polled = PolledSocket(sock, protocol, fast)
    except OSError as exc:
        sock.close()
        raise CompatError(f"cannot take the socket: {exc}") from exc
    old.set_protocol(asyncio.DatagramProtocol())  # its close must not reach aioice
    old.close()  # the loop lets go of its descriptor; the socket lives on in ours
    protocol.transport = polled
    return polled
