"""Request traces replayed through the cache engine on in-memory stores, to compare eviction
policies exactly.

`DriftTrace` asks how soon a policy lets new topics in after old ones were popular. It has two
phases: first only the old topics are asked for, each many times, so their entries pile up
hits; then only new topics, as many as the old ones, in a cache that cannot hold both sets.
`SkewedTrace` is a steady Zipf-like popularity over more topics than the cache holds, where
keeping the popular entries is what counts.

Each request is a lookup; a miss inserts its prompt, as the router does. Every prompt is a new
variant of its topic, embedded near the topic's centre (variants of one topic are about 0.94
similar, other topics about 0), so hits are near hits, never exact repeats.

Everything is seeded and sequential, so a replay is exact: the unit tests assert on it and
`benchmarks/cache_turnover.py` prints it.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from modm.services.cache.embedders import BatchingEmbedder, Embedder
from modm.services.cache.engine import CacheEngine
from modm.services.cache.ledger import Limits
from modm.services.cache.memory import MemoryObjectStore, MemoryVectorStore
from modm.services.cache.model import LookupQuery, NewEntry
from modm.services.cache.policies import EvictionPolicy
from modm.services.cache.thresholds import table
from modm.services.cache.validation import RequestLimits

TENANT = "replay"
_PROMPT = re.compile(r"^topic (\d+) variant (\d+)$")


class TopicEmbedder(Embedder):
    """'topic T variant V' -> the unit vector of topic T's centre plus V's small offset."""

    name = "topics"
    dim = 64
    insert_input = "prompt"
    default_thresholds = table((0.8, 20))

    def __init__(self, topics: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._centres = _unit(rng.standard_normal((topics, self.dim)))
        self._seed = seed

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            match = _PROMPT.match(text)
            if match is None:
                raise ValueError(f"not a replay prompt: {text!r}")
            topic, variant = int(match[1]), int(match[2])
            offset = _unit(np.random.default_rng((self._seed, topic, variant)).standard_normal((1, self.dim)))[0]
            rows.append(self._centres[topic] + 0.25 * offset)
        return _unit(np.asarray(rows)).astype(np.float32)


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


class Trace(Protocol):
    seed: int

    @property
    def topic_count(self) -> int: ...

    def requests(self) -> list[tuple[int, bool]]:
        """(topic, measured) per request, in order: the result keeps the measured ones' hits."""
        ...


@dataclass(frozen=True)
class DriftTrace:
    """`old_requests` over `topics` topics, then `new_requests` over as many new ones; the new
    topics' requests are measured."""

    topics: int = 30
    old_requests: int = 1500
    new_requests: int = 1500
    seed: int = 7

    @property
    def topic_count(self) -> int:
        return 2 * self.topics

    def requests(self) -> list[tuple[int, bool]]:
        rng = random.Random(self.seed)
        old = [(rng.randrange(self.topics), False) for _ in range(self.old_requests)]
        new = [(self.topics + rng.randrange(self.topics), True) for _ in range(self.new_requests)]
        return old + new


@dataclass(frozen=True)
class SkewedTrace:
    """`length` requests over `topics` topics, topic i asked for in proportion to 1 / (i + 1)**exponent;
    all measured."""

    topics: int = 200
    length: int = 3000
    exponent: float = 0.9
    seed: int = 7

    @property
    def topic_count(self) -> int:
        return self.topics

    def requests(self) -> list[tuple[int, bool]]:
        rng = random.Random(self.seed)
        weights = [1 / (i + 1) ** self.exponent for i in range(self.topics)]
        return [(t, True) for t in rng.choices(range(self.topics), weights=weights, k=self.length)]


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    #: Hit (True) or miss of each measured request, in order.
    hits: list[bool]

    def hit_rate(self, start: int = 0, stop: int | None = None) -> float:
        window = self.hits[start:stop]
        return sum(window) / len(window)

    def catches_up_with(self, other: ReplayResult) -> int | None:
        """The first measured request n such that from every request m >= n on, this policy hits
        at least as often as `other` over the rest of the replay; None if not even the last."""
        mine = theirs = 0
        first = None
        for start in range(len(self.hits) - 1, -1, -1):
            mine += self.hits[start]
            theirs += other.hits[start]
            if mine < theirs:
                break
            first = start
        return first


async def replay(policy: EvictionPolicy, capacity: int, trace: Trace) -> ReplayResult:
    """Run `trace` through a fresh engine holding at most `capacity` entries under `policy`."""
    now = [1_000_000.0]
    engine = CacheEngine(
        MemoryVectorStore(TopicEmbedder.dim),
        MemoryObjectStore(lambda: now[0]),
        BatchingEmbedder(TopicEmbedder(trace.topic_count, trace.seed), max_batch=1, window_ms=0),
        policy=policy,
        limits=Limits(max_entries=capacity),
        request_limits=RequestLimits(max_prompt_chars=100, max_top_k=1, max_image_bytes=10_000, max_image_pixels=64),
        clock=lambda: now[0],
    )
    image = _tiny_png()
    hits: list[bool] = []
    await engine.start(reconcile=False, background=False)
    try:
        for variant, (topic, measured) in enumerate(trace.requests()):
            now[0] += 1.0
            prompt = f"topic {topic} variant {variant}"
            hit = (await engine.lookup(LookupQuery(TENANT, prompt))).decision.hit
            if not hit:
                await engine.insert(NewEntry(TENANT, prompt, image, "large"))
            if measured:
                hits.append(hit)
    finally:
        await engine.close()
        await engine.embedder.close()
    return ReplayResult(repr(policy), hits)


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (90, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()
