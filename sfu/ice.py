"""What the server's ICE offers: STUN (off by default) and a public address behind NAT.

Which host addresses aioice offers is chosen process-wide through
``protocol.aiortc_compat.set_host_addresses`` (the composition root passes
``DISCO_RTC_HOST_ADDRESSES``; tests pass ``("127.0.0.1",)`` so that nothing
leaves the loopback).

Behind a 1:1 NAT (a cloud VM with a public IP) the server knows only its
private address; ``announce_public_ip`` adds a server-reflexive candidate with
the public address and the same port to the answer, as LiveKit's ``node_ip``
and Janus's ``nat_1_1_mapping`` do.

aiortc adds Google's public STUN server when ``iceServers`` is None, so
``rtc_configuration`` always passes an explicit list: empty unless STUN URLs
are configured.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aioice.candidate import candidate_priority
from aiortc import RTCConfiguration, RTCIceServer


def rtc_configuration(stun_urls: Sequence[str] = ()) -> RTCConfiguration:
    """The server side's configuration: STUN only if configured, never a default."""
    servers = [RTCIceServer(urls=list(stun_urls))] if stun_urls else []
    return RTCConfiguration(iceServers=servers)


def announce_public_ip(sdp: str, public_ip: str | None) -> str:
    """Add a server-reflexive candidate at ``public_ip`` for each host candidate."""
    if not public_ip:
        return sdp
    public_ip = str(ipaddress.ip_address(public_ip))
    out: list[str] = []
    for line in sdp.splitlines():
        out.append(line)
        if not line.startswith("a=candidate:"):
            continue
        bits = line[len("a=candidate:") :].split()
        # foundation component transport priority ip port "typ" type ...
        if len(bits) < 8 or bits[6] != "typ" or bits[7] != "host" or bits[4] == public_ip:
            continue
        if bits[2].lower() != "udp":
            continue
        foundation, component, transport, _prio, ip, port = bits[:6]
        priority = candidate_priority(int(component), "srflx")
        out.append(
            f"a=candidate:{foundation}n {component} {transport} {priority} {public_ip} {port}"
            f" typ srflx raddr {ip} rport {port}"
        )
    return "\r\n".join(out) + "\r\n"
