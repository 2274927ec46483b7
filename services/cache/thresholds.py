"""Threshold tables: best similarity -> hit (k of 50 steps skipped, img2img strength) or miss.

A table is a list of rungs sorted by descending similarity; the first rung whose minimum the best
similarity reaches decides. Below the lowest rung the lookup is a miss and the large model runs.
`strength = 1 - k / total_steps` (MoDM: the small model skips the first `k` of 50 steps).

Similarities only mean something for the embedder that produced them, so every embedder carries
its own default table and any table can be replaced by configuration (`parse_table`).

**CLIP ViT-L/14 (MoDM)**: the table of the authors' serving code, text-to-image
cosine between the prompt's CLIP text embedding and the cached image's CLIP image embedding.

**all-MiniLM-L6-v2 (prompt-to-prompt)**: MiniLM compares the new prompt with the *prompt* that
produced the cached image, and text-to-text cosines live on a different scale (paraphrases
score 0.85-0.95, unrelated prompts 0.0-0.3) than CLIP text-to-image cosines (0.2-0.35). The
default was chosen by embedding a hand-labelled probe set with the real model (the pairs in
`MINILM_PROBE_PAIRS`, re-checked by tests/integration/test_cache_minilm.py) and placing the rungs so
that

- paraphrases of the same scene (same subject, same setting, reworded) score >= 0.85 and
  reuse most of the image (k = 15..30, strength 0.7..0.4), mirroring MoDM's top three rungs;
- same scene with one attribute changed (colour, breed, style) scores 0.75..0.85 and gets the
  mildest refinement MoDM allows (k = 5..10, strength 0.9..0.8): enough to change that
  attribute, the composition still comes from the cache;
- related-but-different scenes (0.5..0.75: same kind of landscape, a generic shortening of the
  prompt) and unrelated prompts (< 0.3) are misses.

That keeps MoDM's five rungs and their k values and only moves the similarity bounds, and errs
on the side of quality (a doubtful pair is a miss, which costs GPU time, not a wrong image).
Calibrate for a real workload with `calibrate` from pairs labelled with the k a reviewer
accepted.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TOTAL_STEPS = 50


@dataclass(frozen=True, order=True)
class Rung:
    """A best similarity of at least `min_similarity` skips `skipped_steps` of `TOTAL_STEPS`."""

    min_similarity: float
    skipped_steps: int

    @property
    def strength(self) -> float:
        return round(1.0 - self.skipped_steps / TOTAL_STEPS, 6)


@dataclass(frozen=True)
class Decision:
    """Hit with `skipped_steps`/`strength`, or miss (`skipped_steps == 0`, strength 1.0)."""

    hit: bool
    similarity: float
    skipped_steps: int = 0
    strength: float = 1.0

    @classmethod
    def miss(cls, similarity: float = float("-inf")) -> Decision:
        return cls(False, similarity)


class ThresholdTable:
    """Sorted rungs; `decide(similarity)` applies the first rung the similarity reaches."""

    def __init__(self, rungs: Iterable[Rung]) -> None:
        ordered = sorted(rungs, key=lambda r: r.min_similarity, reverse=True)
        if not ordered:
            raise ValueError("a threshold table needs at least one rung")
        for rung in ordered:
            if not math.isfinite(rung.min_similarity) or not -1.0 <= rung.min_similarity <= 1.0:
                raise ValueError(f"similarity bound {rung.min_similarity} is outside [-1, 1]")
            if not 0 < rung.skipped_steps < TOTAL_STEPS:
                raise ValueError(f"k = {rung.skipped_steps} is outside (0, {TOTAL_STEPS})")
        bounds = [r.min_similarity for r in ordered]
        if len(set(bounds)) != len(bounds):
            raise ValueError("two rungs have the same similarity bound")
        steps = [r.skipped_steps for r in ordered]
        if any(a < b for a, b in itertools.pairwise(steps)):
            raise ValueError("a more similar rung must not skip fewer steps than a less similar one")
        self.rungs: tuple[Rung, ...] = tuple(ordered)

    @property
    def miss_below(self) -> float:
        return self.rungs[-1].min_similarity

    def decide(self, similarity: float | None) -> Decision:
        if similarity is None or math.isnan(similarity):
            return Decision.miss()
        for rung in self.rungs:
            if similarity >= rung.min_similarity:
                return Decision(True, similarity, rung.skipped_steps, rung.strength)
        return Decision.miss(similarity)

    def to_json(self) -> str:
        return json.dumps([[r.min_similarity, r.skipped_steps] for r in self.rungs])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThresholdTable) and self.rungs == other.rungs

    def __hash__(self) -> int:
        return hash(self.rungs)

    def __repr__(self) -> str:
        return f"ThresholdTable({self.to_json()})"


def table(*pairs: tuple[float, int]) -> ThresholdTable:
    return ThresholdTable(Rung(sim, k) for sim, k in pairs)


# MoDM's serving code: CLIP ViT-L/14 text-to-image cosine -> k of 50 steps skipped.
CLIP_VIT_L_14 = table((0.30, 30), (0.29, 25), (0.28, 15), (0.27, 10), (0.25, 5))

# all-MiniLM-L6-v2 prompt-to-prompt cosine; see the module docstring for how it was chosen.
MINILM_L6_V2 = table((0.95, 30), (0.90, 25), (0.85, 15), (0.80, 10), (0.75, 5))

# The probe set the MiniLM table was placed against: (query, cached prompt, expected outcome),
# where the outcome is "reuse" (k >= 15), "refine" (k in 5..10) or "miss".
MINILM_PROBE_PAIRS: tuple[tuple[str, str, str], ...] = (
    (
        "a photo of a red sports car parked on a city street at night",
        "a red sports car on a street in the city, night photo",
        "reuse",
    ),
    (
        "portrait of an old fisherman, oil painting, dramatic lighting",
        "oil painting portrait of an elderly fisherman with dramatic light",
        "reuse",
    ),
    (
        "mountain landscape with a lake at sunrise, highly detailed",
        "sunrise over a lake in the mountains, detailed landscape",
        "reuse",
    ),
    ("a cute corgi puppy playing in the snow, digital art", "corgi dog in snow, digital painting", "reuse"),
    (
        "a photo of a red sports car parked on a city street at night",
        "a blue sports car parked on a city street at night",
        "refine",
    ),
    (
        "a cute corgi puppy playing in the snow, digital art",
        "a golden retriever playing in the snow, digital art",
        "refine",
    ),
    ("a photo of a red sports car parked on a city street at night", "a red car", "miss"),
    (
        "mountain landscape with a lake at sunrise, highly detailed",
        "desert landscape with cactus at sunset",
        "miss",
    ),
    ("a cute corgi puppy playing in the snow, digital art", "a cat sleeping on a sofa", "miss"),
    (
        "a bowl of ramen with egg and green onions, food photography",
        "astronaut riding a horse on the moon",
        "miss",
    ),
)


def parse_table(text: str) -> ThresholdTable:
    """A table from JSON: `[[min_similarity, k], ...]` or `[{"min_similarity": s, "k": k}, ...]`."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"threshold table is not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError("threshold table must be a JSON list of rungs")
    rungs = []
    for item in raw:
        if isinstance(item, dict):
            sim, k = item.get("min_similarity"), item.get("k")
        elif isinstance(item, list) and len(item) == 2:
            sim, k = item
        else:
            raise ValueError(f"rung {item!r} is neither [similarity, k] nor an object")
        if not isinstance(sim, int | float) or isinstance(sim, bool) or not isinstance(k, int):
            raise ValueError(f"rung {item!r} needs a numeric similarity and an integer k")
        rungs.append(Rung(float(sim), k))
    return ThresholdTable(rungs)


def calibrate(labelled: Sequence[tuple[float, int]], ks: Sequence[int] = (30, 25, 15, 10, 5)) -> ThresholdTable:
    """A table from (similarity, largest k a reviewer accepted for that pair; 0 = must miss).

    Each rung's bound is the lowest similarity above which *every* labelled pair accepted at
    least that rung's k, i.e. the smallest bound with no false reuse in the labelled set. Rungs
    that no pair supports are dropped; a rung whose bound is not below the
    previous (larger k) rung's adds nothing and is dropped.
    """
    if not labelled:
        raise ValueError("calibration needs labelled pairs")
    rungs: list[Rung] = []
    previous = math.inf
    for k in sorted(ks, reverse=True):
        # The pairs that must not get this k: their similarity must stay below the bound.
        too_far = [sim for sim, accepted in labelled if accepted < k]
        supported = [sim for sim, accepted in labelled if accepted >= k]
        bound = math.nextafter(max(too_far), math.inf) if too_far else min(supported, default=math.inf)
        # Skip a rung no pair supports, or one a more generous rung already covers entirely.
        if bound >= previous or not any(sim >= bound for sim in supported):
            continue
        rungs.append(Rung(bound, k))
        previous = bound
    if not rungs:
        raise ValueError("no labelled pair supports any hit")
    return ThresholdTable(rungs)
