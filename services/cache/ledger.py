"""Capacity accounting and victim selection, per tenant and global, by entries and bytes.

The ledger is the cache process's in-memory view of every entry's bookkeeping (`EntryMeta`). It
is rebuilt from the vector store at start-up and kept current by the engine, which is the only
writer. All methods are synchronous and do no I/O, so a sequence of ledger calls made between
two `await`s is atomic with respect to every other request of the event loop.

Victims come from per-tenant heaps ordered by the policy's key, with lazy invalidation: a hit
that changes an entry's key pushes a fresh item and leaves the stale one to be skipped when it
surfaces; heaps are rebuilt when stale items outnumber live ones. A global victim is the lowest
head among the tenants' heaps, so one eviction costs O(tenants + log entries).

With a policy grace, new entries wait in a per-tenant queue (in insert order) instead of the
heap, and move to the heap once `grace_accesses` accesses (adds and hits) have passed; a victim
comes from the heaps while they have one, else it is the oldest entry still in grace.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from modm.services.cache.policies import EntryMeta, EvictionKey, EvictionPolicy
from modm.tenants import is_tenant


@dataclass(frozen=True)
class TenantLimit:
    """One tenant's capacity override; None keeps the default per-tenant limit for that measure."""

    max_entries: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Limits:
    """None means unbounded. `ttl_seconds` expires entries by age since insert.

    `tenant_max_entries`/`tenant_max_bytes` apply to every tenant without an entry in
    `tenant_overrides`; an override replaces them for its tenant (a measure it leaves None keeps
    the default). The global limits apply on top of every tenant's.
    """

    max_entries: int | None = None
    max_bytes: int | None = None
    tenant_max_entries: int | None = None
    tenant_max_bytes: int | None = None
    ttl_seconds: float | None = None
    tenant_overrides: Mapping[str, TenantLimit] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> tuple[int | None, int | None]:
        """The (entries, bytes) capacity of `tenant`."""
        override = self.tenant_overrides.get(tenant)
        if override is None:
            return self.tenant_max_entries, self.tenant_max_bytes
        return (
            self.tenant_max_entries if override.max_entries is None else override.max_entries,
            self.tenant_max_bytes if override.max_bytes is None else override.max_bytes,
        )

    def largest_entry_bytes(self, tenant: str) -> int | None:
        """The biggest single entry of `tenant` that can ever fit."""
        bounds = [b for b in (self.max_bytes, self.for_tenant(tenant)[1]) if b is not None]
        return min(bounds) if bounds else None


def parse_tenant_limits(text: str) -> dict[str, TenantLimit]:
    """Parse `tenant=entries:bytes,...` (either number may be empty: keep the default).

    Raises ValueError saying what is wrong; tenant ids must be valid ones.
    """
    overrides: dict[str, TenantLimit] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tenant, sep, caps = item.partition("=")
        entries, sep2, size = caps.partition(":")
        if not sep or not sep2:
            raise ValueError(f"{item!r} is not tenant=entries:bytes")
        tenant = tenant.strip()
        if not is_tenant(tenant):
            raise ValueError(f"{item!r}: {tenant!r} is not a valid tenant id")
        if tenant in overrides:
            raise ValueError(f"tenant {tenant!r} is given twice")
        numbers = []
        for value in (entries.strip(), size.strip()):
            if value and (not value.isdigit() or int(value) < 1):
                raise ValueError(f"{item!r}: {value!r} is not a positive whole number")
            numbers.append(int(value) if value else None)
        if numbers == [None, None]:
            raise ValueError(f"{item!r} sets neither entries nor bytes")
        overrides[tenant] = TenantLimit(*numbers)
    return overrides


@dataclass
class Usage:
    entries: int = 0
    bytes: int = 0

    def over(self, max_entries: int | None, max_bytes: int | None) -> bool:
        return (max_entries is not None and self.entries > max_entries) or (
            max_bytes is not None and self.bytes > max_bytes
        )


@dataclass(frozen=True)
class Eviction:
    meta: EntryMeta
    reason: str  # "tenant_capacity", "global_capacity", "ttl"


class _TenantHeap:
    def __init__(self) -> None:
        self.items: list[tuple[EvictionKey, str]] = []
        # Entries in grace, oldest first, as (seq, entry_id); removed ones are skipped lazily.
        self.young: deque[tuple[int, str]] = deque()


class Ledger:
    def __init__(self, policy: EvictionPolicy) -> None:
        self.policy = policy
        self._entries: dict[str, EntryMeta] = {}
        self._keys: dict[str, EvictionKey] = {}
        self._heaps: dict[str, _TenantHeap] = {}
        self._usage: dict[str, Usage] = {}
        self._total = Usage()
        self._by_params: dict[str, set[str]] = {}
        self._seq = itertools.count(1)
        self.last_seq = 0  # the sequence number of the latest add
        self.accesses = 0  # adds and hits so far: the clock of the policy's grace and aging
        self._in_grace: set[str] = set()

    # --- membership -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def get(self, entry_id: str) -> EntryMeta | None:
        return self._entries.get(entry_id)

    def entries(self) -> Iterator[EntryMeta]:
        return iter(list(self._entries.values()))

    def add(self, meta: EntryMeta) -> None:
        if meta.entry_id in self._entries:
            raise KeyError(f"entry {meta.entry_id} is already in the ledger")
        meta.seq = self.last_seq = next(self._seq)
        self.accesses += 1
        meta.added_at_access = self.accesses
        self.policy.on_add(meta, self.accesses)
        self._entries[meta.entry_id] = meta
        usage = self._usage.setdefault(meta.tenant, Usage())
        usage.entries += 1
        usage.bytes += meta.size_bytes
        self._total.entries += 1
        self._total.bytes += meta.size_bytes
        if meta.params_key:
            self._by_params.setdefault(meta.params_key, set()).add(meta.entry_id)
        if self.policy.grace_accesses:
            self._in_grace.add(meta.entry_id)
            self._heaps.setdefault(meta.tenant, _TenantHeap()).young.append((meta.seq, meta.entry_id))
        else:
            self._push(meta)

    def add_all(self, metas: Iterable[EntryMeta]) -> None:
        """Load entries in the order their policy key would have seen them (oldest first)."""
        for meta in sorted(metas, key=lambda m: (m.created_at, m.entry_id)):
            self.add(meta)

    def remove(self, entry_id: str) -> EntryMeta | None:
        meta = self._entries.pop(entry_id, None)
        if meta is None:
            return None
        self._keys.pop(entry_id, None)
        self._in_grace.discard(entry_id)
        usage = self._usage[meta.tenant]
        usage.entries -= 1
        usage.bytes -= meta.size_bytes
        if usage.entries == 0:
            del self._usage[meta.tenant]
            self._heaps.pop(meta.tenant, None)
        self._total.entries -= 1
        self._total.bytes -= meta.size_bytes
        if meta.params_key:
            ids = self._by_params.get(meta.params_key)
            if ids is not None:
                ids.discard(entry_id)
                if not ids:
                    del self._by_params[meta.params_key]
        return meta

    def record_hit(self, entry_id: str, skipped_steps: int, now: float) -> EntryMeta | None:
        meta = self._entries.get(entry_id)
        if meta is None:
            return None
        meta.hit_count += 1
        meta.saved_steps += skipped_steps
        meta.last_hit_at = max(meta.last_hit_at, now)
        self.accesses += 1
        self.policy.on_hit(meta, skipped_steps, self.accesses)
        if entry_id not in self._in_grace:
            self._push(meta)
        return meta

    # --- accounting -------------------------------------------------------------------------

    def usage(self, tenant: str) -> Usage:
        usage = self._usage.get(tenant)
        return Usage(usage.entries, usage.bytes) if usage else Usage()

    @property
    def total(self) -> Usage:
        return Usage(self._total.entries, self._total.bytes)

    def tenants(self) -> list[str]:
        return sorted(self._usage)

    def with_params(self, params_key: str) -> list[EntryMeta]:
        return [self._entries[i] for i in self._by_params.get(params_key, ())]

    # --- eviction ---------------------------------------------------------------------------

    def plan_evictions(self, limits: Limits, tenant: str, protect: frozenset[str] = frozenset()) -> list[Eviction]:
        """Remove and return victims until `tenant` and the whole cache are within `limits`.

        `protect` names entries that must stay (the one just inserted, inserts in flight); if only
        protected entries are left the limits stay exceeded. The returned entries are already
        gone from the ledger; the caller deletes their vectors and objects.
        """
        evicted: list[Eviction] = []
        tenant_entries, tenant_bytes = limits.for_tenant(tenant)
        while self.usage(tenant).over(tenant_entries, tenant_bytes):
            victim = self._lowest([tenant], protect)
            if victim is None:
                break
            evicted.append(Eviction(victim, "tenant_capacity"))
        while self._total.over(limits.max_entries, limits.max_bytes):
            victim = self._lowest(list(self._heaps), protect)
            if victim is None:
                break
            evicted.append(Eviction(victim, "global_capacity"))
        return evicted

    def plan_expiry(
        self, ttl_seconds: float | None, now: float, protect: frozenset[str] = frozenset()
    ) -> list[Eviction]:
        """Remove and return every entry older than the TTL, except those in `protect`."""
        if ttl_seconds is None:
            return []
        cutoff = now - ttl_seconds
        expired = [m.entry_id for m in self._entries.values() if m.created_at < cutoff and m.entry_id not in protect]
        return [Eviction(meta, "ttl") for i in expired if (meta := self.remove(i)) is not None]

    def eviction_order(self, tenant: str | None = None) -> list[str]:
        """Every entry (of `tenant`, or all) in the order the policy would evict them."""
        metas = [m for m in self._entries.values() if tenant is None or m.tenant == tenant]

        def order(meta: EntryMeta) -> tuple[bool, EvictionKey]:
            if self._graced(meta):
                return (True, (meta.seq,))
            return (False, self.policy.key(meta))

        return [m.entry_id for m in sorted(metas, key=order)]

    def _graced(self, meta: EntryMeta) -> bool:
        return self.accesses - meta.added_at_access < self.policy.grace_accesses

    def _end_grace(self, heap: _TenantHeap) -> None:
        """Move the tenant's entries whose grace is over from its queue into its heap."""
        while heap.young:
            seq, entry_id = heap.young[0]
            meta = self._entries.get(entry_id)
            if meta is None or meta.seq != seq or entry_id not in self._in_grace:
                heap.young.popleft()  # removed (or removed and added again) since
                continue
            if self._graced(meta):
                return
            heap.young.popleft()
            self._in_grace.discard(entry_id)
            self._push(meta)

    def _oldest_in_grace(self, tenant: str, protect: frozenset[str]) -> EntryMeta | None:
        heap = self._heaps.get(tenant)
        for seq, entry_id in heap.young if heap is not None else ():
            meta = self._entries.get(entry_id)
            if meta is not None and meta.seq == seq and entry_id in self._in_grace and entry_id not in protect:
                return meta
        return None

    def _push(self, meta: EntryMeta) -> None:
        key = self.policy.key(meta)
        if self._keys.get(meta.entry_id) == key:
            return
        self._keys[meta.entry_id] = key
        heap = self._heaps.setdefault(meta.tenant, _TenantHeap())
        heapq.heappush(heap.items, (key, meta.entry_id))
        live = self._usage[meta.tenant].entries
        if len(heap.items) > 2 * live + 64:
            heap.items = [(self._keys[i], i) for k, i in heap.items if self._keys.get(i) == k]
            heapq.heapify(heap.items)

    def _head(self, tenant: str, protect: frozenset[str]) -> tuple[EvictionKey, str] | None:
        """The tenant's lowest live, unprotected item out of grace, discarding stale items."""
        heap = self._heaps.get(tenant)
        if heap is None:
            return None
        self._end_grace(heap)
        skipped: list[tuple[EvictionKey, str]] = []
        head = None
        while heap.items:
            key, entry_id = heap.items[0]
            if self._keys.get(entry_id) != key:
                heapq.heappop(heap.items)
                continue
            if entry_id in protect:
                skipped.append(heapq.heappop(heap.items))
                continue
            head = (key, entry_id)
            break
        for item in skipped:
            heapq.heappush(heap.items, item)
        return head

    def _lowest(self, tenants: list[str], protect: frozenset[str]) -> EntryMeta | None:
        heads = [h for t in tenants if (h := self._head(t, protect)) is not None]
        if heads:
            return self.remove(min(heads)[1])
        young = [m for t in tenants if (m := self._oldest_in_grace(t, protect)) is not None]
        if young:
            return self.remove(min(young, key=lambda m: m.seq).entry_id)
        return None
