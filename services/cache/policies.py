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

  Plain LCBFU never turns over: a newcomer scores 0, so once older entries have hits every new
  entry is the next victim, and entries that were popular once stay forever. Two settings fix
  that. A grace: an entry is spared while fewer than `grace_accesses` accesses (inserts and
  hits, counted by the ledger) happened since its insert, unless only such entries are left,
  and then the oldest goes. And aging: each retrieval's saving counts half as much for every
  `half_life_accesses` accesses since it happened (exponential decay), so old popularity fades
  and an entry that is hit now can overtake it.

Every key ends with the entry's insertion sequence number, so orders are total and exact.
"""

from __future__ import annotations

import math
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
    # The ledger's access count when the entry was added (the grace runs from it).
    added_at_access: int = field(default=0, compare=False)
    # LCBFU's score: saved steps, or with aging log2 of their decayed sum (see LcbfuPolicy).
    benefit: float = field(default=0.0, compare=False)

    @property
    def last_used_at(self) -> float:
        return max(self.last_hit_at, self.created_at)


EvictionKey = tuple[float, ...]


class EvictionPolicy(ABC):
    """Orders entries for eviction: the entry with the lowest `key` goes first.

    `grace_accesses` > 0 spares new entries (see the module docstring); the ledger applies it.
    """

    name: str
    grace_accesses: int = 0

    @abstractmethod
    def key(self, meta: EntryMeta) -> EvictionKey: ...

    # FIFO and LRU keep no state of their own: these two hooks do nothing unless overridden.
    def on_add(self, meta: EntryMeta, access: int) -> None:  # noqa: B027
        """Set up the policy's state of an entry the ledger adds at access number `access`."""

    def on_hit(self, meta: EntryMeta, skipped_steps: int, access: int) -> None:  # noqa: B027
        """Account a retrieval; the ledger has already counted it in `meta`."""

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
    """Lowest benefit first. Without aging the benefit is `saved_steps`, exactly. With aging a
    saving of k steps at access t weighs k * 2**(t / half_life): scaling every weight by the
    same 2**(-now / half_life) would give the decayed sum, but it would not change the order, so
    keys never need recomputing; they are kept as log2 so they never overflow."""

    name = "lcbfu"

    def __init__(self, grace_accesses: int = 0, half_life_accesses: int = 0) -> None:
        if grace_accesses < 0 or half_life_accesses < 0:
            raise ValueError("grace_accesses and half_life_accesses must be >= 0")
        self.grace_accesses = grace_accesses
        self.half_life_accesses = half_life_accesses

    def key(self, meta: EntryMeta) -> EvictionKey:
        return (meta.benefit, meta.created_at, meta.seq)

    def on_add(self, meta: EntryMeta, access: int) -> None:
        # Savings persisted before a restart count as made now: aging lives in memory.
        meta.benefit = self._weight(meta.saved_steps, access) if self.half_life_accesses else float(meta.saved_steps)

    def on_hit(self, meta: EntryMeta, skipped_steps: int, access: int) -> None:
        if not self.half_life_accesses:
            meta.benefit = float(meta.saved_steps)
            return
        meta.benefit = _log2_sum(meta.benefit, self._weight(skipped_steps, access))

    def _weight(self, steps: int, access: int) -> float:
        return math.log2(steps) + access / self.half_life_accesses if steps > 0 else -math.inf

    def __repr__(self) -> str:
        return f"LcbfuPolicy(grace_accesses={self.grace_accesses}, half_life_accesses={self.half_life_accesses})"


def _log2_sum(a: float, b: float) -> float:
    """log2(2**a + 2**b) without overflow."""
    high, low = max(a, b), min(a, b)
    if low == -math.inf:
        return high
    return high + math.log2(1.0 + 2.0 ** (low - high))


def lcbfu_defaults(max_entries: int | None) -> tuple[int, int]:
    """LCBFU's default (grace, half-life) in accesses: a tenth of the entry capacity, and the
    capacity (10,000 when entries are unbounded). The drift replay (`replay.py`) shows these
    turn the cache over to new topics, and a stationary skewed trace loses nothing by them."""
    capacity = max_entries or 10_000
    return max(1, capacity // 10), capacity


POLICIES: dict[str, type[EvictionPolicy]] = {p.name: p for p in (FifoPolicy, LruPolicy, LcbfuPolicy)}


def policy_named(name: str) -> EvictionPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; choose one of {', '.join(POLICIES)}") from None
