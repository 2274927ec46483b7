"""What the cache engine's unit and integration tests share: a cheap embedder, a settable
clock, small images, an engine on in-memory stores, and a concurrent stress of the engine with
a check that its ledger and both stores agree."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from modm.errors import NotFound
from modm.services.cache.embedders import BatchingEmbedder, Embedder
from modm.services.cache.engine import CacheEngine
from modm.services.cache.ledger import Limits
from modm.services.cache.memory import MemoryObjectStore, MemoryVectorStore
from modm.services.cache.model import GenParams, LookupQuery, NewEntry
from modm.services.cache.policies import EvictionPolicy, policy_named
from modm.services.cache.stores import VectorRecord
from modm.services.cache.thresholds import table
from modm.services.cache.validation import RequestLimits

DIM = 64


class WordsEmbedder(Embedder):
    """Bag of hashed words: prompts sharing words are similar, disjoint ones orthogonal-ish."""

    name = "words"
    dim = DIM
    insert_input = "prompt"
    default_thresholds = table((0.95, 30), (0.7, 10), (0.5, 5))

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def png(color: tuple[int, int, int] = (200, 10, 10), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


# --- an engine on in-memory stores ------------------------------------------------------------


class Harness:
    """A `CacheEngine` with a settable clock, on in-memory stores unless given others; `kw` go
    to the engine (`policy` may be a policy's name or a policy)."""

    def __init__(self, vectors: Any = None, objects: Any = None, **kw: object) -> None:
        self.clock = Clock()
        self.vectors = MemoryVectorStore(DIM) if vectors is None else vectors
        self.objects = MemoryObjectStore(self.clock) if objects is None else objects
        self.words = WordsEmbedder()
        self.kw = kw
        self.engine = self.make()

    def make(self) -> CacheEngine:
        kw = dict(self.kw)
        limits = kw.pop("limits", Limits())
        policy = kw.pop("policy", "fifo")
        return CacheEngine(
            self.vectors,
            self.objects,
            BatchingEmbedder(self.words, max_batch=16, window_ms=5),
            policy=policy if isinstance(policy, EvictionPolicy) else policy_named(str(policy)),
            limits=limits,  # type: ignore[arg-type]
            request_limits=RequestLimits(200, 10, 100_000, 512 * 512),
            reconcile_grace_seconds=60,
            clock=self.clock,
            **kw,  # type: ignore[arg-type]
        )

    async def restart(self) -> CacheEngine:
        await self.engine.close()
        await self.engine.embedder.close()
        self.engine = self.make()
        await self.engine.start(background=False)
        return self.engine

    async def insert(self, prompt: str, tenant: str = "a", **kw: object) -> str:
        result = await self.engine.insert(NewEntry(tenant, prompt, png(), "large-model", **kw))  # type: ignore[arg-type]
        return result.entry_id

    async def lookup(self, prompt: str, tenant: str = "a", **kw: object):  # type: ignore[no-untyped-def]
        return await self.engine.lookup(LookupQuery(tenant, prompt, **kw))  # type: ignore[arg-type]


class Jittered:
    """A store whose every call first waits a random 0 to `max_ms` (on the engine's I/O
    thread), and one call in twenty ten times as long, so concurrent requests overtake each
    other the way they do over a network."""

    def __init__(self, store: object, max_ms: float, seed: int = 0) -> None:
        self._store = store
        self._max_s = max_ms / 1000
        self._rng = random.Random(seed)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            stall = 10 if self._rng.random() < 0.05 else 1
            time.sleep(self._rng.random() * self._max_s * stall)
            return attr(*args, **kwargs)

        return call


async def make_harness(vectors: Any = None, objects: Any = None, **kw: object) -> Harness:
    harness = Harness(vectors, objects, **kw)
    await harness.engine.start(background=False)
    return harness


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met")


class Gate:
    """Holds the vector write of chosen prompts (after their bytes are stored) until released:
    before the row is written, or with `written=True` after it, before the engine hears so."""

    def __init__(self, vectors: Any) -> None:
        self._insert = vectors.insert
        self._held: dict[str, tuple[threading.Event, threading.Event, bool]] = {}
        vectors.insert = self._gated  # type: ignore[method-assign]

    def hold(self, *prompts: str, written: bool = False) -> None:
        for prompt in prompts:
            self._held[prompt] = (threading.Event(), threading.Event(), written)

    async def reached(self, prompt: str) -> None:
        assert await asyncio.to_thread(self._held[prompt][0].wait, 10), f"{prompt!r} never reached its vector write"

    def release(self, prompt: str) -> None:
        self._held[prompt][1].set()

    def _gated(self, record: VectorRecord) -> None:
        reached, release, written = self._held.get(record.prompt, (None, None, False))
        if written:
            self._insert(record)
        if reached is not None and release is not None:
            reached.set()
            release.wait(10)
        if not written:
            self._insert(record)


# --- concurrent stress ------------------------------------------------------------------------

TENANTS = ("a", "b")
WORDS = ("fox", "whale", "owl", "tiger", "heron", "moth", "crab", "lynx")


@dataclass
class StressTally:
    inserts: int = 0
    lookups: int = 0
    hits: int = 0
    deletes: int = 0
    reconciles: int = 0


async def stress(engine: CacheEngine, *, workers: int, operations: int, seed: int = 1) -> StressTally:
    """`workers` tasks run `operations` random inserts, lookups (half with generation
    parameters, so exact repeats too) and deletes of entries seen, all at once over a few
    prompts, so entries get hits and capacity evicts all the time. One operation in a hundred
    of each task's first half is a reconcile; none come later, so they cannot repair what the
    others broke before the caller looks."""
    tally = StressTally()
    known: list[tuple[str, str]] = []
    rng = random.Random(seed)
    images = [png((i * 30, 255 - i * 30, 90)) for i in range(len(WORDS))]
    steps = operations // workers

    async def worker() -> None:
        for step in range(steps):
            tenant = rng.choice(TENANTS)
            i = rng.randrange(len(WORDS))
            text = f"a {WORDS[i]} in the {rng.choice(('snow', 'rain'))}"
            params = GenParams(width=16, height=16, steps=20, seed=i) if rng.random() < 0.5 else None
            roll = rng.random()
            if roll >= 0.99 and step < steps // 2:
                await engine.reconcile(grace_seconds=0)
                tally.reconciles += 1
            elif roll >= 0.85 and known:
                with_tenant, entry_id = known.pop()  # the newest: most likely still cached
                try:
                    await engine.delete(with_tenant, entry_id)
                    tally.deletes += 1
                except NotFound:
                    pass  # evicted (or deleted) already
            elif roll >= 0.45:
                found = await engine.lookup(LookupQuery(tenant, text, params=params))
                tally.lookups += 1
                tally.hits += found.decision.hit
                if found.entry_id and rng.random() < 0.2:
                    known.append((tenant, found.entry_id))
            else:
                result = await engine.insert(NewEntry(tenant, text, images[i], "large", params=params))
                known.append((tenant, result.entry_id))
                tally.inserts += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return tally


def assert_stores_agree(engine: CacheEngine) -> None:
    """The ledger, the vector store and the object store hold exactly the same entries, and
    the ledger is within every capacity."""
    ledger = {m.entry_id: m for m in engine.ledger.entries()}
    rows = {r.entry_id: r for r in engine.vectors.scan()}
    objects = {o.key for o in engine.objects.list(engine.prefix)}
    vector_keys = {r.object_key for r in rows.values()}
    assert sorted(vector_keys - objects) == [], "vectors whose bytes are gone"
    assert sorted(objects - vector_keys) == [], "bytes no vector references"
    assert sorted(set(rows) ^ set(ledger)) == [], "ledger and vector store disagree"
    assert {m.object_key for m in ledger.values()} == objects
    limits = engine.limits
    if limits.max_entries is not None:
        assert len(ledger) <= limits.max_entries
    for tenant in engine.ledger.tenants():
        cap = limits.for_tenant(tenant)[0]
        count = sum(1 for m in ledger.values() if m.tenant == tenant)
        assert engine.ledger.usage(tenant).entries == count
        assert cap is None or count <= cap
