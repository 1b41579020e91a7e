"""A room's shared Opus encoders: one per distinct mix, each listener's stream continuous.

``MixEncoders`` owns them. Each tick ``encode`` takes the tick's distinct mixes
and the listeners of each, gives each mix an encoder id (``sfu.mixer.
assign_encoders``: a listener keeps the encoder that fed it, so its stream does
not restart), and returns one payload per mix. Each encoder's FEC, expected
loss and bitrate follow the worst of its listeners (``sfu.fec_policy``, by
libopus ctls on the live encoder). A mix of digital silence is encoded
``SILENT_FRAMES_ENCODED`` frames, then sent as the one steady silent packet
with no encoder behind it (its FEC state is kept for when sound comes back).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

from protocol.opus import Encoder, silence_packet
from sfu.fec_policy import FecController, LossReports, apply
from sfu.mixer import Pcm, Recipe, assign_encoders

SILENT_FRAMES_ENCODED = 1
"""A mix gone digitally silent is still encoded this many frames (they carry the end
of the last sound out of the encoder's 6.5 ms lookahead); then it is the one steady
silent packet (``protocol.opus.silence_packet``) and its encoder is let go: in a room
where nobody speaks, or in the mix of a talker whose others are quiet, half the
encodes were of silence, and silence costs libopus more than speech (~0.4 ms)."""


class MixEncoders:
    """The encoders of one room's mixes, and which listener each feeds."""

    def __init__(self, bitrate_bps: int, loss: LossReports) -> None:
        self._bitrate_bps = bitrate_bps
        self._loss = loss
        """The room's downlink loss per listener (read, never written, here)."""
        self._encoders: dict[int, Encoder] = {}
        self._fec: dict[int, FecController] = {}
        """Per encoder id: FEC, expected loss and bitrate from its worst listener (kept
        while its mix is silent and has no encoder)."""
        self._silent_run: dict[int, int] = {}
        """Encoder id -> frames of digital silence in a row (``_silence``)."""
        self._listener_encoder: dict[str, int] = {}
        self._fresh_ids = itertools.count(1)

    def encode(self, mixes: Mapping[Recipe, Pcm], groups: Mapping[Recipe, list[str]],
               now: float) -> tuple[dict[Recipe, bytes], int]:
        """One payload per mix, and how many of them libopus encoded."""
        enc_ids = assign_encoders(groups, self._listener_encoder, self._fresh_ids)
        payloads: dict[Recipe, bytes] = {}
        encodes = 0
        for recipe, pcm in mixes.items():
            enc_id = enc_ids[recipe]
            payload = self._silence(enc_id, pcm)
            if payload is None:
                payload = self._encoder(enc_id, groups[recipe], now).encode(pcm)
                encodes += 1
            payloads[recipe] = payload
        self._listener_encoder = {
            listener: enc_ids[recipe] for recipe, ls in groups.items() for listener in ls
        }
        self._retire(set(enc_ids.values()))
        return payloads, encodes

    def forget(self, listener: str) -> None:
        """The listener left (or rejoined): its next mix need not continue the old stream."""
        self._listener_encoder.pop(listener, None)

    def settings(self, listener: str) -> tuple[bool, int, int] | None:
        """(FEC on, expected loss %, bitrate) of the encoder feeding ``listener`` now."""
        enc_id = self._listener_encoder.get(listener)
        controller = self._fec.get(enc_id) if enc_id is not None else None
        if controller is None:
            return None
        s = controller.settings
        return s.fec, s.packet_loss_perc, s.bitrate_bps

    def retune(self, now: float) -> int:
        """Follow the listeners' latest loss; returns how many encoders have FEC on."""
        by_encoder: dict[int, list[str]] = {}
        for listener, enc_id in self._listener_encoder.items():
            by_encoder.setdefault(enc_id, []).append(listener)
        for enc_id, listeners in by_encoder.items():
            if enc_id in self._fec:
                self._tune(enc_id, listeners, now)
        return sum(c.settings.fec for c in self._fec.values())

    def _silence(self, enc_id: int, pcm: Pcm) -> bytes | None:
        """The steady silent packet for this mix, or None: encode it (``SILENT_FRAMES_ENCODED``)."""
        if pcm.any():
            self._silent_run.pop(enc_id, None)
            return None
        run = self._silent_run.get(enc_id, 0) + 1
        self._silent_run[enc_id] = run
        if run <= SILENT_FRAMES_ENCODED:
            return None
        enc = self._encoders.pop(enc_id, None)  # sound comes back through a fresh one
        if enc is not None:
            enc.close()
        return silence_packet(self._bitrate_bps)

    def _encoder(self, enc_id: int, listeners: Collection[str], now: float) -> Encoder:
        enc = self._encoders.get(enc_id)
        if enc is None:
            # Always a new encoder (~45 us): a recycled one would still hold
            # 6.5 ms of lookahead from another mix, which can contain the new
            # listener's own voice. It starts with FEC as its listeners need
            # (as they had, when this mix comes back from silence).
            enc = self._encoders[enc_id] = Encoder(self._bitrate_bps)
            controller = self._fec.get(enc_id)
            if controller is None:
                self._fec[enc_id] = FecController(self._bitrate_bps)
            else:
                apply(enc, controller.settings, FecController(self._bitrate_bps).settings)
            self._tune(enc_id, listeners, now)
        return enc

    def _tune(self, enc_id: int, listeners: Collection[str], now: float) -> None:
        """Set one shared encoder's FEC, expected loss and bitrate from its worst listener
        (libopus ctls on the live encoder: no reset, no click)."""
        controller = self._fec[enc_id]
        old = controller.settings
        new = controller.update(self._loss.worst(listeners, now), now)
        enc = self._encoders.get(enc_id)
        if new != old and enc is not None:  # a silent mix has none: the next starts at `new`
            apply(enc, new, old)

    def _retire(self, in_use: set[int]) -> None:
        for enc_id in [e for e in self._fec if e not in in_use]:
            enc = self._encoders.pop(enc_id, None)
            if enc is not None:
                enc.close()
            del self._fec[enc_id]
            self._silent_run.pop(enc_id, None)
