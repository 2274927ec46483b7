"""The lookup benchmark's arithmetic (modm.bench.lookup): load flags, queries, filler, summaries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modm.bench.lookup import (
    AUTO,
    LoadRecorder,
    drop_words,
    fill_from,
    parse_settings,
    random_unit,
    rotation,
    summarise,
    top1,
    wilson_low,
)


def recorder(loads: list[float]) -> LoadRecorder:
    readings, ticks = iter(loads), itertools.count()
    return LoadRecorder(threshold=3.0, read=lambda: next(readings), clock=lambda: float(next(ticks)))


def test_a_phase_reports_the_load_sampled_during_it_and_is_flagged_above_the_threshold() -> None:
    rec = recorder([9.0, 1.0, 2.5, 2.0, 1.5, 3.5])
    rec.sample()  # before the phase: not part of it
    mark = rec.mark()
    rec.sample()
    assert rec.summary(mark) == {
        "load1_min": 1.0,
        "load1_mean": 1.83,
        "load1_max": 2.5,
        "load1_samples": 3,
        "loaded": False,
    }
    mark = rec.mark()
    assert rec.summary(mark)["loaded"] is True  # 3.5 > 3


def test_the_default_threshold_is_one_and_a_half_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert LoadRecorder().threshold == 3.0


def test_settings_are_efs_and_auto() -> None:
    assert parse_settings("64, 128,auto") == [64, 128, AUTO]
    for bad in ("0", "-4", "fast", "64,,128"):
        with pytest.raises(ValueError):
            parse_settings(bad)


def test_a_dropped_word_query_keeps_the_rest_in_order() -> None:
    rng = np.random.default_rng(0)
    prompt = "a red fox in the snow at dawn, oil painting by a master"
    query = drop_words(prompt, rng)
    words = prompt.split()
    assert len(query.split()) == len(words) - 2  # 15% of 12 words
    remaining = iter(words)
    assert all(word in remaining for word in query.split())  # a subsequence
    assert drop_words("two words", rng) in ("two", "words")
    with pytest.raises(ValueError):
        drop_words("alone", rng)


def test_filler_vectors_are_unit_length_near_their_sources() -> None:
    rng = np.random.default_rng(1)
    # A narrow cone, as text embeddings are: a shared direction plus a spread.
    real = random_unit(rng, 200, 32) * 0.6
    real[:, 0] += 1.0
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    filler, sources = fill_from(real, 1000, rng, chunk=300)
    assert filler.shape == (1000, 32) and sources.shape == (1000,)
    assert np.allclose(np.linalg.norm(filler, axis=1), 1.0, atol=1e-5)
    to_source = np.einsum("ij,ij->i", filler, real[sources])
    to_random = filler @ real[rng.integers(0, 200)]
    assert to_source.mean() > to_random.mean() + 0.1
    assert filler[:, 0].mean() > 0.5  # still inside the cone


def test_random_unit_rows() -> None:
    rows = random_unit(np.random.default_rng(2), 1000, 16, chunk=128)
    assert rows.dtype == np.float32 and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_a_setting_summary_counts_recall_against_brute_force_and_its_ratio() -> None:
    row = summarise(AUTO, 128, [0.001, 0.002, 0.003, 0.004], [5, None, 7, 9], [5, 6, 7, 8], brute_p50_ms=25.0)
    assert row == {
        "setting": AUTO,
        "ef": 128,
        "queries": 4,
        "p50_ms": 2.5,
        "p99_ms": 3.97,
        "recall_at_1": 0.5,  # None (an empty answer) and 9 miss
        "recall_at_1_low95": 0.15,  # 2 of 4 rules out little
        "p50_over_brute": 0.1,
    }
    with pytest.raises(ValueError):
        summarise(64, 64, [0.001], [1, 2], [1, 2], brute_p50_ms=1.0)


def test_the_wilson_bound_of_a_recall_measured_on_few_queries() -> None:
    assert round(wilson_low(495, 500), 3) == 0.977
    assert wilson_low(0, 0) == 0.0
    assert wilson_low(100, 100) < 1.0


def test_each_round_sends_one_query_to_every_setting_starting_one_place_on() -> None:
    assert rotation(3, [64, 128, AUTO]) == [64, 128, AUTO, 128, AUTO, 64, AUTO, 64, 128]


def test_brute_force_top1_in_chunks_matches_one_product() -> None:
    rng = np.random.default_rng(3)
    data, queries = random_unit(rng, 500, 8), random_unit(rng, 70, 8)
    assert (top1(data, queries, chunk=16) == np.argmax(queries @ data.T, axis=1)).all()
