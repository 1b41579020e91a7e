"""``protocol.aiortc_compat.negotiation`` still takes on the installed aiortc/aioice: the
host addresses and port range a real aioice ``Connection`` gathers, RED and the offered
payload types in a real aiortc answer, the ICE reads refusing what is not aioice's.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import aioice
import aioice.ice
import pytest
from aiortc import RTCSessionDescription

from protocol import aiortc_compat
from protocol.aiortc_compat import CompatError
from tests.aiortc_compat_support import (
    _installed,  # noqa: F401 (an autouse fixture)
    loopback_pair,
)

# --- patch 1: host candidates ----------------------------------------------------------


async def gathered_hosts(use_ipv6: bool = False) -> list[str]:
    """Host candidates a real aioice connection gathers now."""
    connection = aioice.Connection(ice_controlling=True, use_ipv6=use_ipv6)
    try:
        await connection.gather_candidates()
        return [c.host for c in connection.local_candidates if c.type == "host"]
    finally:
        await connection.close()


async def test_chosen_host_addresses_are_what_aioice_gathers() -> None:
    assert "127.0.0.1" not in await gathered_hosts()  # aioice's own choice skips loopback
    previous = aiortc_compat.set_host_addresses([" 127.0.0.1 "])
    assert previous == ()
    assert await gathered_hosts() == ["127.0.0.1"]
    assert aiortc_compat.set_host_addresses([]) == ("127.0.0.1",)
    assert "127.0.0.1" not in await gathered_hosts()


def test_chosen_addresses_follow_the_ip_versions_asked_for() -> None:
    aiortc_compat.set_host_addresses(["127.0.0.1", "::1"])
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(False, True) == ["::1"]
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]


def test_a_bad_host_address_is_refused() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        aiortc_compat.set_host_addresses(["127.0.0.1", "not-an-address"])
    assert aiortc_compat.chosen_host_addresses == ()  # nothing half-applied


# --- RED and the offered payload types ------------------------------------------------


def test_red_is_added_once_and_a_changed_codec_table_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiortc.codecs

    aiortc_compat.accept_red()
    aiortc_compat.accept_red()
    audio = aiortc.codecs.CODECS["audio"]
    assert [c.mimeType.lower() for c in audio].count("audio/red") == 1
    assert audio[0].mimeType.lower() == "audio/opus"  # aiortc still sends Opus first
    with monkeypatch.context() as patch:  # undone before the fixture re-installs
        patch.setattr(aiortc.codecs, "CODECS", {"audio": ("opus",)})
        with pytest.raises(CompatError, match="CODECS"):
            aiortc_compat.accept_red()


@pytest.mark.parametrize("red_pt", [40, 63, 121])
async def test_red_offered_at_any_dynamic_payload_type_is_answered_at_that_type(
    monkeypatch: pytest.MonkeyPatch, red_pt: int,
) -> None:
    client, server, _ = loopback_pair(monkeypatch)
    try:
        client.addTransceiver("audio", direction="sendrecv")
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        assert re.search(r"^a=rtpmap:63 red/48000/2", offer, re.MULTILINE)
        offer = re.sub(r"^(a=(?:rtpmap|fmtp):)63 ", rf"\g<1>{red_pt} ", offer,
                       flags=re.MULTILINE)
        offer = re.sub(r"^(m=audio \S+ \S+ .*?)\b63\b", rf"\g<1>{red_pt}", offer,
                       flags=re.MULTILINE)
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await server.setLocalDescription(await server.createAnswer())
        answer = server.localDescription.sdp
        assert re.search(rf"^a=rtpmap:{red_pt} red/48000/2", answer, re.MULTILINE), answer
    finally:
        await client.close()
        await server.close()


# --- ICE internals (for tests) --------------------------------------------------------


def test_ice_reads_refuse_a_transport_without_an_aioice_connection() -> None:
    with pytest.raises(CompatError, match="_connection"):
        aiortc_compat.nominated_local_candidate(SimpleNamespace())  # type: ignore[arg-type]
    with pytest.raises(CompatError, match="_connection"):
        aiortc_compat.go_silent(SimpleNamespace(_connection=object()))  # type: ignore[arg-type]


# --- patch 3: the media port range ------------------------------------------------------


async def test_host_candidates_bind_inside_the_chosen_port_range() -> None:
    aiortc_compat.set_host_addresses(["127.0.0.1"])
    try:
        assert aiortc_compat.set_port_range(47_000, 47_003) is None
        ports = []
        connections = [aioice.Connection(ice_controlling=True) for _ in range(4)]
        for connection in connections:  # four sockets fill the four ports
            await connection.gather_candidates()
            ports += [c.port for c in connection.local_candidates if c.type == "host"]
        assert sorted(ports) == [47_000, 47_001, 47_002, 47_003]
        full = aioice.Connection(ice_controlling=True)
        await full.gather_candidates()  # aioice logs the bind failure and offers nothing
        assert [c for c in full.local_candidates if c.type == "host"] == []
        for connection in [*connections, full]:
            await connection.close()
        assert aiortc_compat.set_port_range(None, None) == (47_000, 47_003)
        anywhere = aioice.Connection(ice_controlling=True)
        await anywhere.gather_candidates()
        assert all(not 47_000 <= c.port <= 47_003 for c in anywhere.local_candidates)
        await anywhere.close()
    finally:
        aiortc_compat.set_port_range(None, None)
        aiortc_compat.set_host_addresses([])


@pytest.mark.parametrize(("first", "last"), [(80, 90), (5000, 4000), (5000, None), (1, 70_000)])
def test_bad_port_ranges_are_refused(first: int | None, last: int | None) -> None:
    with pytest.raises(ValueError, match="port range"):
        aiortc_compat.set_port_range(first, last)
