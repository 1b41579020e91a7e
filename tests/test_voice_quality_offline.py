"""Speech through the whole voice path, offline: wideband PESQ floors and holes.

The talker's speech (espeak-ng) is encoded with ``protocol.opus``, impaired on the
uplink, received by Disco (``disco``: reorder buffer, FEC from the next
packet, PLC; ``naive``: what Disco did before issue #14), re-encoded,
impaired on the downlink and played by the listener (see
``tests/voice_pipeline.py``). Seeded, so the scores are repeatable; the
floors are the issue's targets, the scores measured here are in the
comments.
"""

from __future__ import annotations

import functools

import pytest

from tests.impair import Impairment
from tests.speech import Pcm, holes, pesq_wb, speech
from tests.voice_pipeline import Condition, run

CLEAN = Condition("clean")
LOSS_10 = Condition("10% loss both ways", Impairment(loss=0.10, seed=1),
                    Impairment(loss=0.10, seed=2))
JITTER_60 = Condition("0-60 ms jitter both ways", Impairment(jitter_ms=60.0, seed=3),
                      Impairment(jitter_ms=60.0, seed=4))


@pytest.fixture(scope="module")
def reference() -> Pcm:
    return speech()


@functools.cache
def score(condition: Condition, mode: str) -> tuple[float, int]:
    ref = speech()
    out = run(ref, condition, mode)
    return pesq_wb(ref, out), holes(ref, out)


@pytest.mark.parametrize(("condition", "floor"), [
    (CLEAN, 3.2),      # measured 3.56
    (LOSS_10, 2.6),    # measured 2.81
    (JITTER_60, 2.8),  # measured 3.60
], ids=lambda x: x.name if isinstance(x, Condition) else str(x))
def test_disco_meets_the_floors(reference: Pcm, condition: Condition, floor: float) -> None:
    mos, gaps = score(condition, "disco")
    assert mos >= floor, f"{condition.name}: PESQ {mos:.2f} < {floor}"
    assert gaps <= 2, f"{condition.name}: {gaps} holes"


@pytest.mark.parametrize("condition", [LOSS_10, JITTER_60], ids=lambda c: c.name)
def test_naive_silence_for_loss_scores_lower(reference: Pcm, condition: Condition) -> None:
    disco, disco_holes = score(condition, "disco")
    naive, naive_holes = score(condition, "naive")  # measured 1.26 (3 holes), 1.09 (16)
    assert naive < disco - 0.8, (naive, disco)
    assert naive_holes > disco_holes


def test_clean_path_is_not_made_worse(reference: Pcm) -> None:
    disco, _ = score(CLEAN, "disco")
    naive, _ = score(CLEAN, "naive")  # measured 3.60: disco sheds its 60 ms start in pauses
    assert disco >= naive - 0.1


def test_red_repairs_what_fec_cannot(reference: Pcm) -> None:
    red, gaps = score(LOSS_10, "disco+red")  # measured 3.68
    fec_only, _ = score(LOSS_10, "disco")
    assert red >= 3.2 and red > fec_only + 0.4
    assert gaps == 0
