"""The pure mixer: who hears whom (the mix plan), mix-minus, and dedupe.

Nothing here awaits or touches a socket; time and audio come in as arguments,
so every rule is tested table-driven without an event loop.

Model, per 20 ms tick:

* ``MixPlan`` holds the slowly changing inputs: the audibility map (``None``
  means a group room where everyone hears everyone at gain 1; otherwise
  listener -> {speaker: gain}, which the proximity code fills in) and the
  per-listener volume overrides. It turns them, plus the set of speakers that
  are *active this tick*, into one ``Recipe`` per listener: the sorted tuple of
  ``(speaker, gain)`` the listener hears, without their own voice (mix-minus).
* Listeners whose recipes are equal hear bit-identical audio, so ``mix`` builds
  each distinct recipe once and the room encodes it once. In a group room with
  k people talking there are at most k + 1 distinct mixes whatever the room
  size: each talker hears the others, everybody else hears all k. That sharing
  is what makes the server cheap (see docs/architecture.md: the encode is the cost).
* Only speakers the level gate marks active take part. Silent or absent
  participants are left out of recipes, otherwise every listener would have a
  recipe of its own (everyone minus a silent self) and dedupe would never hit.
* Sums are int32 and clipped once to int16 at the end: no wrap-around, and
  the clip only happens when the mix really is too loud.

``assign_encoders`` keeps Opus encoder state continuous across ticks: when the
recipes change (someone starts talking) the largest group of listeners keeps
the encoder it had, so only the few who moved get a stream from another
encoder (a decoder fed packets from another encoder can click briefly).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol.limits import GAIN_MAX

SAMPLE_RATE_HZ = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 960
INT16_MIN = -32_768
INT16_MAX = 32_767
MAX_GAIN = GAIN_MAX  # the protocol's bound (``protocol.limits``), the mixer's rule

Pcm = npt.NDArray[np.int16]
"""One mono 20 ms frame: 960 int16 samples at 48 kHz."""

Acc = npt.NDArray[np.int32]
"""An int32 accumulator of one frame (a music bed, a mix before clipping)."""

Recipe = tuple[tuple[str, float], ...]
"""What one listener hears this tick: sorted ``(speaker, gain)`` pairs."""

SILENCE: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
SILENCE.flags.writeable = False


def silence() -> Pcm:
    """A fresh silent frame (the shared ``SILENCE`` is read-only)."""
    return np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass
class MixPlan:
    """Who hears whom with which gain, before knowing who talks this tick.

    ``audible`` None is a group room (everyone hears everyone at gain 1);
    otherwise a listener without a row hears nobody. ``volumes`` holds each
    listener's own volume for a given speaker, 0..2, multiplied into the
    audibility gain.
    """

    audible: dict[str, dict[str, float]] | None = None
    volumes: dict[str, dict[str, float]] | None = None

    def set_volume(self, listener: str, speaker: str, gain: float) -> None:
        """Set ``listener``'s volume for ``speaker``; raises ValueError out of 0..2."""
        if not (0.0 <= gain <= MAX_GAIN) or gain != gain:  # NaN fails both
            raise ValueError(f"gain must be within 0..{MAX_GAIN}, got {gain!r}")
        if self.volumes is None:
            self.volumes = {}
        per_listener = self.volumes.setdefault(listener, {})
        if gain == 1.0:
            per_listener.pop(speaker, None)
            if not per_listener:
                del self.volumes[listener]
        else:
            per_listener[speaker] = float(gain)

    def set_audible(self, rows: dict[str, dict[str, float]] | None) -> None:
        """Replace who hears whom (None: a group room); rows are taken, not copied."""
        self.audible = rows

    def set_mutual(
        self, pid: str, row: Mapping[str, float] | None, lost: Collection[str] = ()
    ) -> None:
        """``pid`` hears ``row`` and each of them hears ``pid`` at the same gain; ``lost``
        and ``pid`` no longer hear each other; ``row`` None: ``pid`` left (its row goes).

        A nearby room's pairs are mutual, so one person's move changes exactly
        these entries: O(their neighbours), not O(room).
        """
        if self.audible is None:
            self.audible = {}
        audible = self.audible
        for other in lost:
            audible.get(other, {}).pop(pid, None)
        if row is None:
            audible.pop(pid, None)
            return
        audible[pid] = dict(row)
        for other, gain in row.items():
            audible.setdefault(other, {})[pid] = gain

    def audibility(self) -> dict[str, dict[str, float]] | None:
        """A copy of the rows (None: a group room)."""
        audible = self.audible
        return None if audible is None else {k: dict(v) for k, v in audible.items()}

    def forget(self, participant: str) -> None:
        """Drop volume settings by and for a participant who left.

        ``audible`` rows belong to whoever sets them (the nearby room drops a
        leaver's row itself): a peer that failed and re-offers keeps its row.
        """
        if not self.volumes:
            return
        self.volumes.pop(participant, None)
        for listener in list(self.volumes):
            self.volumes[listener].pop(participant, None)
            if not self.volumes[listener]:
                del self.volumes[listener]

    def gain(self, listener: str, speaker: str) -> float:
        """The gain at which ``listener`` hears ``speaker`` (0 = not at all)."""
        if listener == speaker:
            return 0.0
        if self.audible is None:
            base = 1.0
        else:
            base = float(self.audible.get(listener, {}).get(speaker, 0.0))
        if self.volumes:
            base *= self.volumes.get(listener, {}).get(speaker, 1.0)
        return base

    def recipes(self, listeners: Iterable[str], active: Collection[str]) -> dict[str, Recipe]:
        """One recipe per listener, given the speakers active this tick."""
        ordered = sorted(active)
        out: dict[str, Recipe] = {}
        if self.audible is None and not self.volumes:
            # Group room fast path: everyone hears every active speaker but
            # themselves at gain 1. Non-speakers all share one tuple object.
            everyone: Recipe = tuple((s, 1.0) for s in ordered)
            active_set = set(ordered)
            for listener in listeners:
                if listener in active_set:
                    out[listener] = tuple(p for p in everyone if p[0] != listener)
                else:
                    out[listener] = everyone
            return out
        for listener in listeners:
            pairs = []
            for speaker in ordered:
                g = self.gain(listener, speaker)
                if g > 0.0:
                    pairs.append((speaker, g))
            out[listener] = tuple(pairs)
        return out


def group_listeners(recipes: Mapping[str, Recipe]) -> dict[Recipe, list[str]]:
    """Listeners grouped by identical recipe (the dedupe)."""
    groups: dict[Recipe, list[str]] = {}
    for listener, recipe in recipes.items():
        groups.setdefault(recipe, []).append(listener)
    return groups


def mix_one(recipe: Recipe, frames: Mapping[str, Pcm], bed: Acc | None = None) -> Pcm:
    """Mix one recipe: int32 sum of ``gain * frame`` (+ the bed), clipped to int16.

    A speaker in the recipe without a frame this tick contributes silence.
    Unity gains are added as exact integers; other gains are applied in
    float32 and rounded.
    """
    acc: Acc = np.zeros(FRAME_SAMPLES, dtype=np.int32) if bed is None else bed.astype(np.int32)
    for speaker, g in recipe:
        frame = frames.get(speaker)
        if frame is None:
            continue
        if g == 1.0:
            acc += frame
        else:
            acc += np.rint(frame.astype(np.float32) * np.float32(g)).astype(np.int32)
    np.clip(acc, INT16_MIN, INT16_MAX, out=acc)
    return acc.astype(np.int16)


def mix(
    recipes: Mapping[str, Recipe], frames: Mapping[str, Pcm], bed: Acc | None = None
) -> tuple[dict[Recipe, Pcm], dict[Recipe, list[str]]]:
    """Build every distinct mix once.

    Returns ``(mixes, groups)``: the mixed frame per distinct recipe, and the
    listeners sharing each recipe. ``len(mixes)`` is the number of encodes the
    room needs this tick.
    """
    groups = group_listeners(recipes)
    return {recipe: mix_one(recipe, frames, bed) for recipe in groups}, groups


def assign_encoders(
    groups: Mapping[Recipe, list[str]],
    previous: Mapping[str, int],
    new_id: Iterable[int],
) -> dict[Recipe, int]:
    """Give each distinct recipe an encoder id, keeping streams continuous.

    ``previous`` maps each listener to the encoder that fed it last tick.
    Recipes are served largest group first; each takes the encoder most of its
    listeners had, unless a bigger group took it already; otherwise it gets the
    next id from ``new_id``. Pure: the caller owns the encoders.
    """
    taken: set[int] = set()
    fresh = iter(new_id)
    out: dict[Recipe, int] = {}
    for recipe, listeners in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        votes: dict[int, int] = {}
        for listener in listeners:
            enc = previous.get(listener)
            if enc is not None and enc not in taken:
                votes[enc] = votes.get(enc, 0) + 1
        if votes:
            chosen = max(votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        else:
            chosen = next(fresh)
            while chosen in taken:
                chosen = next(fresh)
        taken.add(chosen)
        out[recipe] = chosen
    return out
