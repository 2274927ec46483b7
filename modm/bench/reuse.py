"""How much of a prompt stream a cache could reuse: each prompt is an exact repeat of an earlier
one, a near duplicate of one (word-set Jaccard at or above a threshold, the text-level proxy for
what the cache's embedder calls close), or fresh.

A builder labels each request with its `kind` (as the synthetic generator does), so a replay's
records and a trace's header say what the trace offers the cache before any run.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

NEAR_JACCARD = 0.6
_WORD = re.compile(r"\w+")


def words(prompt: str) -> frozenset[str]:
    return frozenset(_WORD.findall(prompt.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared) if a or b else 0.0


def reuse_kinds(prompts: Sequence[str], threshold: float = NEAR_JACCARD) -> list[str]:
    """`repeat`, `near` or `fresh` per prompt, against every earlier prompt.

    Exact, not sampled, and fast on thousands of prompts by prefix filtering: order each word set
    rarest word first; two sets at Jaccard >= t share a word among the first |s| - ceil(t|s|) + 1
    words of each, so only earlier prompts indexed under those words are compared.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    sets = [words(p) for p in prompts]
    frequency = Counter(w for s in sets for w in s)
    by_word: defaultdict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    kinds = []
    for i, (prompt, mine) in enumerate(zip(prompts, sets, strict=True)):
        ordered = sorted(mine, key=lambda w: (frequency[w], w))
        prefix = ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1] if ordered else []
        if prompt in seen:
            kinds.append("repeat")
        else:
            # and a pair that far apart in size cannot reach the threshold
            low, high = threshold * len(mine), len(mine) / threshold
            candidates = {j for w in prefix for j in by_word[w] if low <= len(sets[j]) <= high}
            kinds.append("near" if any(jaccard(mine, sets[j]) >= threshold for j in candidates) else "fresh")
        seen.add(prompt)
        for w in prefix:
            by_word[w].append(i)
    return kinds
