from __future__ import annotations

import math

import pytest

from modm.services.cache.thresholds import (
    CLIP_VIT_L_14,
    MINILM_L6_V2,
    TOTAL_STEPS,
    Rung,
    ThresholdTable,
    calibrate,
    parse_table,
    table,
)


@pytest.mark.parametrize(
    ("similarity", "k", "strength"),
    [
        (0.35, 30, 0.4),
        (0.30, 30, 0.4),
        (0.2999, 25, 0.5),
        (0.29, 25, 0.5),
        (0.285, 15, 0.7),
        (0.28, 15, 0.7),
        (0.275, 10, 0.8),
        (0.27, 10, 0.8),
        (0.26, 5, 0.9),
        (0.25, 5, 0.9),
    ],
)
def test_modm_clip_table_matches_design(similarity: float, k: int, strength: float) -> None:
    decision = CLIP_VIT_L_14.decide(similarity)
    assert decision.hit
    assert decision.skipped_steps == k
    assert decision.strength == pytest.approx(strength)
    assert decision.strength == pytest.approx(1 - k / TOTAL_STEPS)


@pytest.mark.parametrize("similarity", [0.2499, 0.0, -0.5, None, math.nan])
def test_below_lowest_rung_is_a_miss(similarity: float | None) -> None:
    decision = CLIP_VIT_L_14.decide(similarity)
    assert not decision.hit
    assert decision.skipped_steps == 0
    assert decision.strength == 1.0


def test_minilm_table_keeps_modm_ks_on_its_own_scale() -> None:
    assert [r.skipped_steps for r in MINILM_L6_V2.rungs] == [r.skipped_steps for r in CLIP_VIT_L_14.rungs]
    assert MINILM_L6_V2.miss_below == 0.75
    assert MINILM_L6_V2.decide(0.93).skipped_steps == 25
    assert not MINILM_L6_V2.decide(0.74).hit


def test_rungs_are_sorted_whatever_the_input_order() -> None:
    shuffled = ThresholdTable([Rung(0.27, 10), Rung(0.30, 30), Rung(0.25, 5), Rung(0.29, 25), Rung(0.28, 15)])
    assert shuffled == CLIP_VIT_L_14


@pytest.mark.parametrize(
    "rungs",
    [
        [],
        [Rung(0.3, 0)],
        [Rung(0.3, 50)],
        [Rung(1.5, 10)],
        [Rung(0.3, 10), Rung(0.3, 20)],
        [Rung(0.3, 10), Rung(0.2, 20)],  # less similar must not skip more
    ],
)
def test_invalid_tables_are_refused(rungs: list[Rung]) -> None:
    with pytest.raises(ValueError):
        ThresholdTable(rungs)


def test_parse_table_accepts_pairs_and_objects() -> None:
    assert parse_table("[[0.9, 20], [0.8, 5]]") == table((0.9, 20), (0.8, 5))
    assert parse_table('[{"min_similarity": 0.9, "k": 20}]') == table((0.9, 20))
    assert parse_table(CLIP_VIT_L_14.to_json()) == CLIP_VIT_L_14


@pytest.mark.parametrize("text", ["nope", "{}", "[[0.9]]", '[["a", 1]]', "[[0.9, 2.5]]", "[]"])
def test_parse_table_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_table(text)


def test_calibrate_places_bounds_just_above_the_closest_rejected_pair() -> None:
    labelled = [(0.97, 30), (0.93, 25), (0.91, 15), (0.86, 15), (0.84, 5), (0.80, 0), (0.5, 0)]
    tbl = calibrate(labelled)
    # No pair gets more than it accepted ...
    for sim, accepted in labelled:
        assert tbl.decide(sim).skipped_steps <= accepted
    # ... and every accepted pair is a hit.
    for sim, accepted in labelled:
        assert tbl.decide(sim).hit == (accepted > 0)
    assert tbl.decide(0.81).hit  # between the rejected 0.80 and the accepted 0.84
    assert not tbl.decide(0.80).hit


def test_calibrate_needs_some_support() -> None:
    with pytest.raises(ValueError):
        calibrate([(0.9, 0), (0.2, 0)])
    with pytest.raises(ValueError):
        calibrate([])
