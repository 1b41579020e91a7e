"""Each patch of ``protocol.aiortc_compat`` still takes on the installed aiortc/aioice.

A test per patch, on the real libraries: the host-address choice changes the
candidates a real aioice ``Connection`` gathers, and the RTP tap hands a real
aiortc receiver's packets over on arrival (a single packet, which aiortc's own
jitter buffer would hold until four more came). If an upgrade renames what a
patch relies on, ``install`` or ``take_rtp`` raises ``CompatError`` (tested
with stand-ins), and these tests fail instead of the server quietly losing
the patch.

This file: ``install`` itself (each check it runs before it patches) and the
rule that the private parts are touched in the package only. The patches'
own tests are in ``test_aiortc_compat_negotiation.py``, ``_receive.py`` and
``_send.py``, one file per module; what they share is in
``tests/aiortc_compat_support.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from protocol import aiortc_compat
from protocol.aiortc_compat import CompatError
from tests.aiortc_compat_support import _installed  # noqa: F401 (an autouse fixture)

ROOT = Path(__file__).resolve().parent.parent


# --- install -------------------------------------------------------------------------


def test_install_is_idempotent() -> None:
    aiortc_compat.install()
    patched = aioice.ice.get_host_addresses
    aiortc_compat.install()
    assert aioice.ice.get_host_addresses is patched
    assert aiortc_compat.installed()


def test_choosing_addresses_before_install_is_an_error() -> None:
    aiortc_compat.uninstall()
    try:
        with pytest.raises(CompatError, match="install"):
            aiortc_compat.set_host_addresses(["127.0.0.1"])
    finally:
        aiortc_compat.install()


def test_install_fails_loudly_if_aioice_stops_calling_get_host_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def gather_candidates(self: Any) -> None:  # a future aioice gathering elsewhere
        return None

    aiortc_compat.uninstall()
    monkeypatch.setattr(aioice.ice.Connection, "gather_candidates", gather_candidates)
    with pytest.raises(CompatError, match="gather_candidates"):
        aiortc_compat.install()
    assert not aiortc_compat.installed()
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    with pytest.raises(CompatError, match="get_host_addresses"):
        aiortc_compat.check_aioice_gathering()
    monkeypatch.undo()  # before the fixture installs again


def test_install_fails_loudly_if_the_receiver_loses_its_private_parts() -> None:
    aiortc_compat.check_receiver_class(RTCRtpReceiver)  # the installed aiortc has them

    class Receiver:  # a future aiortc with its jitter buffer renamed
        def __init__(self) -> None:
            self.buffer = None

        async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
            self.buffer = packet

    with pytest.raises(CompatError, match="jitter_buffer"):
        aiortc_compat.check_receiver_class(Receiver)


def test_install_fails_loudly_if_aioice_stops_binding_through_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def get_component_candidates(self: Any, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[Any]:  # noqa: ASYNC109
        return []  # a future aioice binding its sockets some other way

    aiortc_compat.uninstall()
    monkeypatch.setattr(aioice.ice.Connection, "get_component_candidates",
                        get_component_candidates)
    with pytest.raises(CompatError, match="port range"):
        aiortc_compat.install()
    monkeypatch.undo()


def test_install_fails_loudly_if_aioice_stops_handing_on_what_is_not_stun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        return None  # a future aioice demultiplexing some other way

    aiortc_compat.uninstall()
    monkeypatch.setattr(aiortc_compat.receive, "_AIOICE_DATAGRAM_RECEIVED", datagram_received)
    with pytest.raises(CompatError, match="demux"):
        aiortc_compat.install()
    assert not aiortc_compat.installed()
    monkeypatch.undo()


# --- one package -----------------------------------------------------------------------


def test_private_names_appear_in_the_compat_module_only() -> None:
    """What the issue's grep checks, kept checked (the patterns are split to not match here)."""
    pattern = re.compile(
        "|".join(["_RTC" + "Rtp", "__" + "jitter", r"\._" + "data", "_offer" + "Direction",
                  "get_host_" + "addresses ="])
    )
    hits = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or "site-packages" in rel.parts:
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            hits.add(rel.as_posix())
    assert hits and all(h.startswith("protocol/aiortc_compat/") for h in hits), hits
