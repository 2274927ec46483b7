"""Eviction policies behind one interface: each orders entries by a key, lowest evicted first.

- FIFO (MoDM's serving code): oldest insert first.
- LRU: least recently used first; an entry that was never retrieved counts as used when it was
  inserted.
- LCBFU (NIRVANA's "least computationally beneficial and frequently used"): lowest
  retrieval count x steps saved first. NIRVANA caches latents at a fixed step k, so its score is
  count x k. A MoDM entry is a final image whose saving depends on how close each query was,
  so the score here is the steps the entry actually saved, summed over its retrievals: its
  retrieval count times the mean k of those retrievals (`EntryMeta.saved_steps`). Ties (e.g.
  never-retrieved entries, score 0) go oldest first.

Every key ends with the entry's insertion sequence number, so orders are total and exact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(slots=True)
class EntryMeta:
    """What eviction, capacity and exact-repeat detection need to know about one entry."""

    entry_id: str
    tenant: str
    size_bytes: int
    created_at: float
    object_key: str = ""
    last_hit_at: float = 0.0
    hit_count: int = 0
    saved_steps: int = 0
    shared: bool = False
    # Fingerprint of the generation parameters without the seed ("" when unknown) and the seed.
    params_key: str = ""
    seed: str = ""
    # Insertion order in this process; ties in every policy key are broken by it.
    seq: int = field(default=0, compare=False)

    @property
    def last_used_at(self) -> float:
        return max(self.last_hit_at, self.created_at)


EvictionKey = tuple[float, ...]


class EvictionPolicy(ABC):
    """Orders entries for eviction: the entry with the lowest `key` goes first."""

    name: str

    @abstractmethod
    def key(self, meta: EntryMeta) -> EvictionKey: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FifoPolicy(EvictionPolicy):
    name = "fifo"

    def key(self, meta: EntryMeta) -> EvictionKey:
        return (meta.created_at, meta.seq)


class LruPolicy(EvictionPolicy):
    name = "lru"

    def key(self, meta: EntryMeta) -> EvictionKey:
        return (meta.last_used_at, meta.seq)


class LcbfuPolicy(EvictionPolicy):
    name = "lcbfu"

    def key(self, meta: EntryMeta) -> EvictionKey:
        return (float(meta.saved_steps), meta.created_at, meta.seq)


POLICIES: dict[str, type[EvictionPolicy]] = {p.name: p for p in (FifoPolicy, LruPolicy, LcbfuPolicy)}


def policy_named(name: str) -> EvictionPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; choose one of {', '.join(POLICIES)}") from None
