"""Speaker selection (top-N by level with hysteresis), table-driven on a 20 ms clock."""

from __future__ import annotations

import pytest

from sfu.speakers import HYSTERESIS_DB, MIN_DBOV, SpeakerSelector, limit_recipes

TICK_S = 0.02

Script = list[dict[str, float]]
"""One dict of levels (dBov) per tick; a participant missing from a tick has left."""


def run(script: Script, top_n: int = 3) -> list[frozenset[str]]:
    sel = SpeakerSelector(top_n=top_n)
    return [sel.update(k * TICK_S, levels) for k, levels in enumerate(script)]


def steady(levels: dict[str, float], ticks: int) -> Script:
    return [dict(levels) for _ in range(ticks)]


SIX = {"a": -10.0, "b": -14.0, "c": -18.0, "d": -22.0, "e": -26.0, "f": -30.0}

CASES: list[tuple[str, Script, int, set[str]]] = [
    ("six talkers, N = 3: the three loudest",
     steady(SIX, 10), 3, {"a", "b", "c"}),
    ("fewer talkers than places: all of them",
     steady({"a": -20.0, "b": -30.0}, 5), 3, {"a", "b"}),
    ("silence is never selected",
     steady({"a": -20.0, "b": MIN_DBOV, "c": -70.0}, 5), 3, {"a"}),
    ("N = 1: the loudest",
     steady(SIX, 5), 1, {"a"}),
    ("a challenger within the hysteresis does not displace an incumbent",
     steady({"a": -20.0}, 5) + steady({"a": -20.0, "b": -20.0 + HYSTERESIS_DB - 0.5}, 20), 1,
     {"a"}),
    ("a challenger beyond the hysteresis does",
     steady({"a": -20.0}, 5) + steady({"a": -20.0, "b": -20.0 + HYSTERESIS_DB + 1.0}, 2), 1,
     {"b"}),
    ("an incumbent who falls silent frees the place for a quieter talker",
     steady({"a": -10.0, "b": -40.0}, 5) + steady({"a": MIN_DBOV, "b": -40.0}, 150), 1, {"b"}),
    ("a participant who left is dropped",
     steady({"a": -10.0, "b": -40.0}, 5) + steady({"b": -40.0}, 1), 1, {"b"}),
]


@pytest.mark.parametrize(("name", "script", "top_n", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_selection(name: str, script: Script, top_n: int, expected: set[str]) -> None:
    assert run(script, top_n)[-1] == expected


def test_a_quieter_talker_who_gets_louder_takes_a_place_within_200_ms() -> None:
    script = steady(SIX, 50)  # 1 s: a, b, c selected
    louder = dict(SIX, f=-6.0)  # f, the quietest, now the loudest
    script += steady(louder, 10)
    chosen = run(script)
    assert chosen[49] == {"a", "b", "c"}
    first = next(k for k in range(50, len(chosen)) if "f" in chosen[k])
    assert (first - 50) * TICK_S <= 0.2
    assert chosen[-1] == {"a", "b", "f"}  # c, the quietest of the three, gave way


def test_pauses_between_words_keep_a_place() -> None:
    """Talk 300 ms, pause 200 ms, repeatedly: a steady quieter talker does not take over."""
    sel = SpeakerSelector(top_n=1)
    chosen = []
    for k in range(200):
        a = -15.0 if (k % 25) < 15 else MIN_DBOV
        chosen.append(sel.update(k * TICK_S, {"a": a, "b": -25.0}))
    assert all(c == {"a"} for c in chosen[1:])


def test_selection_is_deterministic_on_ties() -> None:
    assert run(steady({"b": -20.0, "a": -20.0, "c": -20.0}, 3), top_n=2)[-1] == {"a", "b"}


def test_forget_and_bad_settings() -> None:
    sel = SpeakerSelector(top_n=2)
    sel.update(0.0, {"a": -10.0, "b": -20.0})
    sel.forget(["a"])
    assert sel.selected() == {"b"} and sel.envelope("a") == MIN_DBOV
    with pytest.raises(ValueError, match="top_n"):
        SpeakerSelector(top_n=0)
    with pytest.raises(ValueError, match="release"):
        SpeakerSelector(release_db_per_s=0.0)


def test_ranking_is_loudest_first_and_passes_only_by_the_hysteresis() -> None:
    sel = SpeakerSelector(top_n=3)
    sel.update(0.0, {"a": -20.0, "b": -10.0, "c": -30.0})
    assert sel.ranked() == ("b", "a", "c")
    sel.update(0.02, {"a": -10.0 + HYSTERESIS_DB - 1.0, "b": -10.0, "c": -30.0})
    assert sel.ranked() == ("b", "a", "c")  # a is louder, but not by the margin
    sel.update(0.04, {"a": -10.0 + HYSTERESIS_DB + 1.0, "b": -10.0, "c": -30.0})
    assert sel.ranked() == ("a", "b", "c")


RANKED = ("a", "b", "c", "d")  # N = 3: the room decodes N + 1 = 4

LIMIT_CASES: list[tuple[str, dict[str, tuple[tuple[str, float], ...]],
                        dict[str, tuple[tuple[str, float], ...]]]] = [
    ("a listener who is not talking hears the top 3",
     {"x": (("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0))},
     {"x": (("a", 1.0), ("b", 1.0), ("c", 1.0))}),
    ("a selected talker hears the 3 loudest others",
     {"a": (("b", 1.0), ("c", 1.0), ("d", 1.0)), "d": (("a", 1.0), ("b", 1.0), ("c", 1.0))},
     {"a": (("b", 1.0), ("c", 1.0), ("d", 1.0)), "d": (("a", 1.0), ("b", 1.0), ("c", 1.0))}),
    ("gains stay with their speakers; an unranked speaker goes first",
     {"y": (("a", 0.5), ("c", 0.25), ("d", 2.0), ("z", 1.0))},
     {"y": (("a", 0.5), ("c", 0.25), ("d", 2.0))}),
]


@pytest.mark.parametrize(("name", "recipes", "expected"), LIMIT_CASES,
                         ids=[c[0] for c in LIMIT_CASES])
def test_limit_recipes(name: str, recipes: dict[str, tuple[tuple[str, float], ...]],
                       expected: dict[str, tuple[tuple[str, float], ...]]) -> None:
    got = limit_recipes(recipes, RANKED, 3)
    assert got == expected
    for listener, recipe in got.items():
        assert listener not in {s for s, _ in recipe}  # nobody hears themselves
