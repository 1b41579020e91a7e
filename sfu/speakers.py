"""Speaker selection: the loudest few participants, by level, with hysteresis.

A conference mixer decodes only those who may be heard: the top N by recent
level (LiveKit and Jitsi pick active speakers from the RFC 6464 audio level
each packet carries, without decoding). ``SpeakerSelector`` is that choice,
pure (time passed in as ``now``, levels in dBov):

* Each participant's level goes through an envelope: a louder level is taken
  at once (instant attack, so an onset is never late), a quieter one only as
  fast as ``RELEASE_DB_PER_S`` lets the envelope fall (the pauses between
  words do not cost a talker their place).
* Only participants whose envelope is at or above ``floor_dbov`` may be
  selected; free places go to the loudest of them at once.
* A selected participant keeps their place until they fall under the floor,
  or until someone else's envelope is ``HYSTERESIS_DB`` louder than the
  quietest selected one's (no flapping between two similar voices). A
  quieter talker who gets louder therefore takes a place on the first tick
  their level passes that margin.

Ties break by participant id, so the choice is deterministic.

Mix-minus needs one more: a listener never hears themselves, so a selected
talker hears the others. The room decodes the top N + 1 (``SpeakerSelector``
with ``top_n = N + 1``) and ``limit_recipes`` keeps, in each listener's
recipe, the N best ranked (``ranked()``: the selection ordered loudest first,
where one passes another only by the same hysteresis). Everyone then hears
the N loudest of the others, and there are at most N + 2 distinct mixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MIN_DBOV = -127.0
"""RFC 6464's floor: digital silence."""
DEFAULT_TOP_N = 3
"""Speakers decoded and mixed at once, as conference mixers default to (Jitsi: 3)."""
FLOOR_DBOV = -60.0
"""Under this envelope a participant is silent and never selected (the speaking
detector's stop threshold, ``sfu.levels.STOP_DBOV``)."""
RELEASE_DB_PER_S = 20.0
"""How fast an envelope falls when the level drops: 4 dB over a 200 ms pause."""
HYSTERESIS_DB = 3.0
"""A challenger must be this much louder than the quietest selected speaker."""


@dataclass
class _Envelope:
    level_dbov: float
    at: float


@dataclass
class SpeakerSelector:
    """Top-N participants by recent level, with hysteresis (pure; time passed in)."""

    top_n: int = DEFAULT_TOP_N
    floor_dbov: float = FLOOR_DBOV
    release_db_per_s: float = RELEASE_DB_PER_S
    hysteresis_db: float = HYSTERESIS_DB
    _env: dict[str, _Envelope] = field(default_factory=dict)
    _selected: list[str] = field(default_factory=list)
    """The selection, ranked: loudest first, passing another only by the hysteresis."""

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {self.top_n}")
        if self.release_db_per_s <= 0 or self.hysteresis_db < 0:
            raise ValueError("release must be > 0 dB/s and hysteresis >= 0 dB")

    def update(self, now: float, levels: Mapping[str, float]) -> frozenset[str]:
        """Feed this tick's level of every participant (dBov); returns who is selected.

        Participants missing from ``levels`` are forgotten (they left).
        """
        env = self._env
        floor = self.floor_dbov
        release = self.release_db_per_s
        # Only envelopes at or above the floor are kept: a room's silent majority
        # costs one comparison each per tick.
        for pid in list(env):
            e = env[pid]
            level = levels.get(pid)
            if level is None:  # left
                del env[pid]
                continue
            fallen = e.level_dbov - release * max(now - e.at, 0.0)
            e.level_dbov = level if level > fallen else fallen
            e.at = now
            if e.level_dbov < floor:
                del env[pid]
        for pid, level in levels.items():
            if level >= floor and pid not in env:
                env[pid] = _Envelope(float(level), now)
        kept = [p for p in self._selected if p in env]
        taken = set(kept)
        challengers = sorted(
            (p for p, e in env.items() if p not in taken and e.level_dbov >= floor),
            key=lambda p: (-env[p].level_dbov, p))
        while len(kept) < self.top_n and challengers:
            kept.append(challengers.pop(0))
        for challenger in challengers:  # loudest first: stop at the first who does not win
            weakest = min(kept, key=lambda p: (env[p].level_dbov, p))
            if env[challenger].level_dbov <= env[weakest].level_dbov + self.hysteresis_db:
                break
            kept[kept.index(weakest)] = challenger
        previous = {p: i for i, p in enumerate(self._selected)}
        order = sorted(kept, key=lambda p: (previous.get(p, len(previous)),
                                            -env[p].level_dbov, p))
        for i in range(1, len(order)):  # one insertion pass: rise past the clearly quieter
            j = i
            while j > 0 and (env[order[j]].level_dbov
                             > env[order[j - 1]].level_dbov + self.hysteresis_db):
                order[j - 1], order[j] = order[j], order[j - 1]
                j -= 1
        self._selected = order
        return frozenset(order)

    def selected(self) -> frozenset[str]:
        return frozenset(self._selected)

    def ranked(self) -> tuple[str, ...]:
        """The selection, loudest first (with hysteresis: the order does not flap)."""
        return tuple(self._selected)

    def envelope(self, pid: str) -> float:
        """A participant's current envelope in dBov (``MIN_DBOV`` if unknown)."""
        e = self._env.get(pid)
        return MIN_DBOV if e is None else e.level_dbov

    def forget(self, pids: Iterable[str]) -> None:
        for pid in pids:
            self._env.pop(pid, None)
            if pid in self._selected:
                self._selected.remove(pid)


Recipe = tuple[tuple[str, float], ...]
"""``sfu.mixer.Recipe``: sorted ``(speaker, gain)`` pairs one listener hears."""


def limit_recipes(recipes: Mapping[str, Recipe], ranked: Sequence[str],
                  top_n: int) -> dict[str, Recipe]:
    """Each listener's recipe cut to its ``top_n`` best-ranked speakers.

    A speaker missing from ``ranked`` ranks last. Recipes already short enough
    are kept as they are (the same object: the dedupe stays cheap), and equal
    recipes are cut once.
    """
    rank = {p: i for i, p in enumerate(ranked)}
    last = len(rank)
    cut: dict[Recipe, Recipe] = {}
    out: dict[str, Recipe] = {}
    for listener, recipe in recipes.items():
        if len(recipe) <= top_n:
            out[listener] = recipe
            continue
        short = cut.get(recipe)
        if short is None:
            best = sorted(recipe, key=lambda sg: (rank.get(sg[0], last), sg[0]))[:top_n]
            short = cut[recipe] = tuple(sorted(best))
        out[listener] = short
    return out
