"""The cache's data plane: validation, embedding, the two stores, capacity and consistency.

It knows nothing of gRPC and talks to its stores only through the `VectorStore` and
`ObjectStore` protocols, so every rule below is tested with in-memory stores.

Consistency rules
- Insert writes the image bytes first, then the vector. A lookup can only find an entry through
  its vector, so nothing is visible before its bytes are stored. A crash between the writes
  leaves an object no vector references: an orphan that reconcile removes once it is older
  than the grace period (objects of inserts in flight in this process are never touched).
- Delete and eviction remove the vector first (the entry stops being findable), then the bytes.
  A crash between leaves an orphan object, again removed by reconcile.
- A lookup or fetch that finds a vector whose object has vanished treats it as a miss and
  removes the stale vector.
- Reconcile scans the vectors first and lists the objects second (so every scanned vector's
  object, written before it, is listed unless really gone), then removes stale vectors, orphan
  objects, expired entries, and re-synchronises the in-memory ledger with the vector store. It
  runs at start-up, on request, and every `reconcile_interval_seconds`.
- An insert is pending from the moment its bytes are stored and it enters the ledger until its
  vector is written. A pending entry is never an eviction or TTL victim, a delete of it waits
  for its vector, and reconcile leaves it in the ledger. Once its vector is written the insert
  evicts down to capacity (even when its caller has gone), sparing the inserts still pending:
  capacity can be exceeded by at most the number of inserts in flight, and only while they are.

The ledger (capacity, eviction order, exact-repeat index) is in memory and rebuilt from the
vector store at start-up; hit bookkeeping is persisted every `stats_flush_seconds`, so a crash
loses at most that much hit history, never an entry. One process should write a given
collection and bucket prefix (the ledger assumes it is the only writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from modm.errors import InvalidArgument, NotFound, Unavailable
from modm.images import decode_image
from modm.params import ParamsFingerprint
from modm.services.cache import metrics
from modm.services.cache.embedders import BatchingEmbedder
from modm.services.cache.ledger import Eviction, Ledger, Limits
from modm.services.cache.model import (
    Entry,
    GenParams,
    InsertResult,
    LookupQuery,
    LookupResult,
    Match,
    NewEntry,
    ReconcileReport,
    StatsReport,
    TenantCounters,
    TenantStats,
    content_type_of,
)
from modm.services.cache.policies import EntryMeta, EvictionPolicy
from modm.services.cache.stores import (
    ObjectMissing,
    ObjectStore,
    StatsUpdate,
    StoreUnavailable,
    VectorRecord,
    VectorStore,
)
from modm.services.cache.thresholds import TOTAL_STEPS, Decision, ThresholdTable
from modm.services.cache.validation import (
    RequestLimits,
    check_embedding,
    check_entry_id,
    check_metadata,
    check_model_id,
    check_prompt,
    check_tenant,
    check_top_k,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- the engine ---------------------------------------------------------------------------


@dataclass
class PendingInsert:
    """An insert between its ledger entry and the end of its vector write."""

    record: VectorRecord
    written: asyncio.Event = field(default_factory=asyncio.Event)


class CacheEngine:
    def __init__(
        self,
        vectors: VectorStore,
        objects: ObjectStore,
        embedder: BatchingEmbedder,
        *,
        policy: EvictionPolicy,
        limits: Limits,
        request_limits: RequestLimits,
        thresholds: ThresholdTable | None = None,
        object_prefix: str = "entries/",
        reconcile_grace_seconds: float = 300.0,
        reconcile_interval_seconds: float = 0.0,
        stats_flush_seconds: float = 2.0,
        ttl_sweep_seconds: float | None = None,
        fault_pause_after_object_put_s: float = 0.0,
        io_threads: int = 16,
        clock: Callable[[], float] = time.time,
        object_store_for_bucket: Callable[[str], ObjectStore] | None = None,
    ) -> None:
        self.vectors = vectors
        self.objects = objects
        self.embedder = embedder
        self.limits = limits
        self.request_limits = request_limits
        self.thresholds = thresholds or embedder.embedder.default_thresholds
        self.prefix = object_prefix
        self.reconcile_grace_seconds = reconcile_grace_seconds
        self._reconcile_interval_seconds = reconcile_interval_seconds  # 0: only at start and on request
        self._stats_flush_seconds = stats_flush_seconds
        self._ttl_sweep_seconds = ttl_sweep_seconds
        self._fault_pause = fault_pause_after_object_put_s
        self._clock = clock
        # Imports from another bucket of the same object store (None: only the cache's own).
        self.object_store_for_bucket = object_store_for_bucket
        self.ledger = Ledger(policy)
        self.counters: dict[str, TenantCounters] = defaultdict(TenantCounters)
        self._executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="cache-io")
        self._mutations = asyncio.Lock()  # deletes vs. stats upserts (an upsert must not resurrect)
        self._reconciling = asyncio.Lock()
        self._inflight_keys: set[str] = set()
        # Inserts whose vector write is under way: an exact repeat can already be served from them.
        self._pending: dict[str, PendingInsert] = {}
        # Ids removed while a reconcile is between its scan and its ledger re-sync: that scan
        # may still list them, and they must not come back.
        self._removed_during_reconcile: set[str] | None = None
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def dim(self) -> int:
        return self.vectors.dim

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, *, reconcile: bool = True, background: bool = True) -> ReconcileReport | None:
        """Load the ledger from the vector store, reconcile, and start the background loops."""
        rows = await self._io(lambda: list(self.vectors.scan()), "vector scan")
        self.ledger.add_all(self._meta_of(r) for r in rows)
        self._update_gauges()
        log.info("ledger loaded", extra={"entries": len(self.ledger), "bytes": self.ledger.total.bytes})
        report = await self.reconcile() if reconcile else None
        if background:
            self._every(self._stats_flush_seconds, self.flush_stats, "persisting hit statistics")
            if self.limits.ttl_seconds is not None:
                # Default: a quarter of the TTL, between 1 s and 60 s.
                period = self._ttl_sweep_seconds or min(max(self.limits.ttl_seconds / 4, 1.0), 60.0)
                self._every(period, self.expire, "TTL sweep")
            if self._reconcile_interval_seconds > 0:
                self._every(self._reconcile_interval_seconds, self.reconcile, "periodic reconcile")
        return report

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.flush_stats()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # --- lookup -------------------------------------------------------------------------

    async def lookup(self, query: LookupQuery) -> LookupResult:
        started = time.perf_counter()
        tenant = check_tenant(query.tenant)
        top_k = check_top_k(query.top_k, self.request_limits)
        prompt, vector = self._query_of(query)
        fp = self._query_fingerprint(query, prompt)
        counters = self.counters[tenant]
        counters.lookups += 1
        now = self._clock()

        if fp is not None:
            exact = await self._exact_repeat(tenant, fp, now, query.dry_run)
            if exact is not None:
                counters.lookup_hits += 1
                counters.exact_repeats += 1
                metrics.LOOKUPS.labels("exact_repeat").inc()
                decision = Decision(True, 1.0, TOTAL_STEPS, 0.0)
                return LookupResult([Match(exact, 1.0)], decision, True, exact.entry_id, 0.0, 0.0)

        embed_seconds = 0.0
        if vector is None:
            t0 = time.perf_counter()
            vector = (await self.embedder.embed_text(prompt)).tolist()
            embed_seconds = time.perf_counter() - t0
            metrics.LOOKUP_SECONDS.labels("embed").observe(embed_seconds)
        t0 = time.perf_counter()
        matches = await self._search(vector, top_k, tenant, now)
        search_seconds = time.perf_counter() - t0
        metrics.LOOKUP_SECONDS.labels("search").observe(search_seconds)

        if matches:
            best = matches[0]
            decision = self.thresholds.decide(best.similarity)
            entry_id = best.entry.entry_id
        else:
            decision, entry_id = Decision.miss(-1.0), ""
        if decision.hit:
            counters.lookup_hits += 1
            if not query.dry_run and self.ledger.record_hit(entry_id, decision.skipped_steps, now):
                self._dirty.add(entry_id)
        metrics.LOOKUPS.labels("hit" if decision.hit else "miss").inc()
        metrics.LOOKUP_SECONDS.labels("total").observe(time.perf_counter() - started)
        return LookupResult(matches, decision, False, entry_id, embed_seconds, search_seconds)

    def _query_of(self, query: LookupQuery) -> tuple[str, list[float] | None]:
        has_prompt, has_vector = bool(query.prompt), bool(query.embedding)
        if has_prompt == has_vector:
            raise InvalidArgument("prompt", "give exactly one of prompt and embedding")
        if has_vector:
            return "", check_embedding(list(query.embedding), self.dim)
        return check_prompt(query.prompt, self.request_limits), None

    def _query_fingerprint(self, query: LookupQuery, prompt: str) -> ParamsFingerprint | None:
        if query.params is None:
            return None
        params_prompt = query.params.prompt.strip()
        if prompt and params_prompt and params_prompt != prompt:
            raise InvalidArgument("params.prompt", "must be empty or equal prompt")
        text = prompt or params_prompt
        if not text:
            return None  # an embedding query with no prompt cannot be an exact repeat
        return query.params.fingerprint(check_prompt(text, self.request_limits, "params.prompt"))

    async def _exact_repeat(self, tenant: str, fp: ParamsFingerprint, now: float, dry_run: bool) -> Entry | None:
        candidates = [
            m
            for m in self.ledger.with_params(fp.key)
            if (m.tenant == tenant or m.shared) and fp.matches(m.params_key, m.seed) and not self._expired(m, now)
        ]
        # Own entries before shared ones, newest first.
        candidates.sort(key=lambda m: (m.tenant != tenant, -m.created_at))
        for meta in candidates:
            if not await self._io(lambda m=meta: self.objects.exists(m.object_key), "object stat"):
                await self._remove_stale([meta.entry_id])
                continue
            pending = self._pending.get(meta.entry_id)
            if pending is not None:
                records = [pending.record]
            else:
                records = await self._io(lambda m=meta: self.vectors.get([m.entry_id]), "vector get")
            if not records:
                continue
            if not dry_run and self.ledger.record_hit(meta.entry_id, TOTAL_STEPS, now):
                self._dirty.add(meta.entry_id)
            return self._entry_of(records[0])
        return None

    async def _search(self, vector: list[float], top_k: int, tenant: str, now: float) -> list[Match]:
        created_after = now - self.limits.ttl_seconds if self.limits.ttl_seconds is not None else None
        for _attempt in range(3):
            hits = await self._io(lambda: self.vectors.search(vector, top_k, tenant, created_after), "vector search")
            # Rows the ledger does not know are being deleted (or not yet committed): skip them.
            known = [h for h in hits if h.record.entry_id in self.ledger]
            present = await asyncio.gather(
                *(self._io(lambda h=h: self.objects.exists(h.record.object_key), "object stat") for h in known)
            )
            vanished = [h.record.entry_id for h, ok in zip(known, present, strict=True) if not ok]
            if vanished:
                await self._remove_stale(vanished)
                continue  # search again so the caller still gets top_k live entries
            return [Match(self._entry_of(h.record), h.similarity) for h in known]
        return []

    # --- fetch / insert / delete --------------------------------------------------------

    async def fetch(self, tenant: str, entry_id: str) -> tuple[bytes, Entry]:
        tenant = check_tenant(tenant)
        meta = self._visible(tenant, check_entry_id(entry_id), owner=False)
        records = await self._io(lambda: self.vectors.get([meta.entry_id]), "vector get")
        if not records:
            raise NotFound(f"entry {entry_id} not found")
        try:
            data = await self._io(lambda: self.objects.get(meta.object_key), "object get")
        except ObjectMissing:
            await self._remove_stale([meta.entry_id])
            raise NotFound(f"entry {entry_id} not found (its image was gone; the entry is removed)") from None
        return data, self._entry_of(records[0])

    async def insert(self, new: NewEntry) -> InsertResult:
        tenant = check_tenant(new.tenant)
        prompt = check_prompt(new.prompt, self.request_limits)
        model_id = check_model_id(new.model_id)
        metadata = check_metadata(new.metadata)
        if new.params is not None and new.params.prompt.strip() and new.params.prompt.strip() != prompt:
            raise InvalidArgument("params.prompt", "must be empty or equal prompt")
        largest = self.limits.largest_entry_bytes(tenant)
        if largest is not None and len(new.image) > largest:
            raise InvalidArgument("image", f"is {len(new.image)} bytes, more than the cache holds ({largest})")
        limits = self.request_limits
        image = await asyncio.to_thread(
            decode_image,
            new.image,
            field="image",
            max_bytes=limits.max_image_bytes,
            max_pixels=limits.max_image_pixels,
        )
        embed = self.embedder.embedder.insert_input
        vector = await (self.embedder.embed_image(image) if embed == "image" else self.embedder.embed_text(prompt))

        entry_id = uuid.uuid4().hex
        key = f"{self.prefix}{tenant}/{entry_id}"
        fp = new.params.fingerprint(prompt) if new.params is not None else None
        extra = {"metadata": metadata, "params": new.params.to_dict(prompt) if new.params else None}
        record = VectorRecord(
            entry_id=entry_id,
            tenant=tenant,
            prompt=prompt,
            model_id=model_id,
            object_key=key,
            size_bytes=len(new.image),
            created_at=self._clock(),
            shared=new.shared,
            width=image.width,
            height=image.height,
            params_key=fp.key if fp else "",
            seed=fp.seed if fp else "",
            extra=json.dumps(extra, separators=(",", ":")),
            vector=np.asarray(vector, dtype=np.float32).tolist(),
        )
        # Shielded: a caller that gives up mid-way must not leave the writes or the eviction undone.
        evictions = await asyncio.shield(self._write_entry(record, new.image))
        return InsertResult(entry_id, [e.meta.entry_id for e in evictions])

    async def _write_entry(self, record: VectorRecord, data: bytes) -> list[Eviction]:
        """Bytes first, then the ledger, then the vector (undoing both if it fails), then evict.

        The ledger (which answers exact repeats) learns of the entry before the vector can be
        found by a search, so a repeat of the prompt right after its insert is an exact repeat,
        never a near hit on its own image; the bytes it would serve are already stored. Until
        the vector is written the entry is pending: nothing may evict or delete it.
        """
        key = record.object_key
        pending = PendingInsert(record)
        self._inflight_keys.add(key)
        try:
            await self._io(lambda: self.objects.put(key, data, content_type_of(data)), "object put")
            if self._fault_pause:
                log.warning("fault injection: pausing between the object and the vector write")
                await asyncio.sleep(self._fault_pause)
            self._pending[record.entry_id] = pending
            self.ledger.add(self._meta_of(record))
            try:
                await self._io(lambda: self.vectors.insert(record), "vector insert")
            except Exception:
                self.ledger.remove(record.entry_id)
                with contextlib.suppress(Exception):  # best effort; reconcile removes it otherwise
                    await self._io(lambda: self.objects.delete([key]), "object delete")
                raise
        finally:
            self._pending.pop(record.entry_id, None)
            self._inflight_keys.discard(key)
            pending.written.set()
        self.counters[record.tenant].inserts += 1
        metrics.INSERTS.inc()
        evictions = self.ledger.plan_evictions(self.limits, record.tenant, protect=self._pinned(record.entry_id))
        if evictions:
            await self._purge(evictions)
        self._update_gauges()
        return evictions

    def _pinned(self, *entry_ids: str) -> frozenset[str]:
        """Entries no eviction may take: the inserts in flight, and `entry_ids`."""
        return frozenset(self._pending).union(entry_ids)

    async def delete(self, tenant: str, entry_id: str) -> None:
        tenant = check_tenant(tenant)
        entry_id = check_entry_id(entry_id)
        meta = self._visible(tenant, entry_id, owner=True)
        pending = self._pending.get(entry_id)
        if pending is not None:  # an exact repeat named it already: let its vector land first
            await pending.written.wait()
            meta = self._visible(tenant, entry_id, owner=True)
        async with self._mutations:
            self.ledger.remove(meta.entry_id)
            self._forget([meta.entry_id])
            try:
                await self._io(lambda: self.vectors.delete([meta.entry_id]), "vector delete")
            except BaseException:
                self._restore([meta])
                raise
            # The entry is no longer findable; if this fails the orphan is reconcile's.
            with contextlib.suppress(Unavailable):
                await self._io(lambda: self.objects.delete([meta.object_key]), "object delete")
        self._update_gauges()

    def _visible(self, tenant: str, entry_id: str, *, owner: bool) -> EntryMeta:
        meta = self.ledger.get(entry_id)
        if meta is None or self._expired(meta, self._clock()) or (meta.tenant != tenant and (owner or not meta.shared)):
            raise NotFound(f"entry {entry_id} not found")
        return meta

    # --- stats --------------------------------------------------------------------------

    def stats(self, tenant: str = "") -> StatsReport:
        if tenant:
            check_tenant(tenant)
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for meta in self.ledger.entries():
            row = per[meta.tenant]
            row[0] += 1
            row[1] += meta.size_bytes
            row[2] += meta.hit_count
            row[3] += meta.saved_steps
        names = sorted(set(per) | set(self.counters))
        if tenant:
            names = [tenant]
        tenants = [
            TenantStats(name, *per.get(name, [0, 0, 0, 0]), counters=self.counters.get(name, TenantCounters()))
            for name in names
        ]
        total_counters = TenantCounters(
            *(sum(getattr(t.counters, f) for t in tenants) for f in TenantCounters.__dataclass_fields__)
        )
        total = TenantStats(
            "",
            sum(t.entries for t in tenants),
            sum(t.bytes for t in tenants),
            sum(t.hit_count for t in tenants),
            sum(t.saved_steps for t in tenants),
            total_counters,
        )
        return StatsReport(total, tenants)

    # --- consistency --------------------------------------------------------------------

    async def reconcile(self, grace_seconds: float | None = None) -> ReconcileReport:
        grace = self.reconcile_grace_seconds if grace_seconds is None else grace_seconds
        if not grace >= 0:  # NaN too: it would compare false and silently remove nothing
            raise InvalidArgument("grace_seconds", "must be a non-negative number")
        async with self._reconciling:
            now = self._clock()
            expired = self.ledger.plan_expiry(self.limits.ttl_seconds, now, protect=self._pinned())
            if expired:
                await self._purge(expired)
            seq_before_scan = self.ledger.last_seq
            # In the ledger before the scan but maybe not yet in the vector store.
            pending_at_scan = frozenset(self._pending)
            self._removed_during_reconcile = removed = set()
            try:
                report = await self._reconcile_pass(now, grace, seq_before_scan, pending_at_scan, removed)
            finally:
                self._removed_during_reconcile = None
        self._update_gauges()
        report = dataclasses.replace(report, expired_removed=report.expired_removed + len(expired))
        log.info("reconciled", extra=report.__dict__)
        return report

    async def _reconcile_pass(
        self, now: float, grace: float, seq_before_scan: int, pending_at_scan: frozenset[str], removed: set[str]
    ) -> ReconcileReport:
        """One scan-and-repair pass; the caller holds the reconcile lock."""
        rows = await self._io(lambda: list(self.vectors.scan()), "vector scan")
        listed = await self._io(lambda: {o.key: o for o in self.objects.list(self.prefix)}, "object list")

        # Vectors whose bytes are gone (keys outside the prefix are checked one by one).
        stale: list[str] = []
        for row in rows:
            if row.object_key in listed:
                continue
            if row.object_key.startswith(self.prefix) or not await self._io(
                lambda r=row: self.objects.exists(r.object_key), "object stat"
            ):
                stale.append(row.entry_id)
        # Rows past their TTL that the ledger had already dropped (e.g. a failed purge); not
        # those of inserts still in flight, which the TTL sweep takes once they are done.
        ttl = self.limits.ttl_seconds
        spared = set(stale) | self._pending.keys()
        late = [r for r in rows if ttl is not None and r.created_at < now - ttl and r.entry_id not in spared]
        doomed = set(stale) | {r.entry_id for r in late}
        referenced = {r.object_key for r in rows}
        async with self._mutations:
            if doomed:
                for entry_id in doomed:
                    self.ledger.remove(entry_id)
                await self._io(lambda: self.vectors.delete(sorted(doomed)), "vector delete")
                metrics.STALE_REMOVED.inc(len(stale))
            # Re-synchronise the ledger with what the vector store holds. Entries the ledger
            # had before the scan began were in the store then, unless they were pending.
            row_ids = {r.entry_id for r in rows}
            for meta in self.ledger.entries():
                if meta.seq <= seq_before_scan and meta.entry_id not in row_ids | pending_at_scan:
                    self.ledger.remove(meta.entry_id)
            skip = doomed | removed
            for row in rows:
                if row.entry_id not in skip and row.entry_id not in self.ledger:
                    self.ledger.add(self._meta_of(row))
            # Objects no vector references, old enough not to belong to an insert in flight.
            live_keys = {m.object_key for m in self.ledger.entries()} | self._inflight_keys
            orphans = [
                key
                for key, info in listed.items()
                if key not in referenced and key not in live_keys and info.modified_at <= now - grace
            ]
            doomed_keys = orphans + [r.object_key for r in late]
            if doomed_keys:
                await self._io(lambda: self.objects.delete(doomed_keys), "object delete")
                metrics.ORPHANS_REMOVED.inc(len(orphans))
        return ReconcileReport(
            vectors_scanned=len(rows),
            objects_scanned=len(listed),
            stale_vectors_removed=len(stale),
            orphan_objects_removed=len(orphans),
            expired_removed=len(late),
        )

    async def _remove_stale(self, entry_ids: Sequence[str]) -> None:
        """Vectors whose objects vanished: out of the ledger and the vector store."""
        async with self._mutations:
            for entry_id in entry_ids:
                self.ledger.remove(entry_id)
            self._forget(entry_ids)
            await self._io(lambda: self.vectors.delete(list(entry_ids)), "vector delete")
        metrics.STALE_REMOVED.inc(len(entry_ids))
        log.warning("removed vectors whose images were gone", extra={"entry_ids": list(entry_ids)})
        self._update_gauges()

    async def _purge(self, evictions: Sequence[Eviction]) -> None:
        """Delete evicted entries (already out of the ledger): vectors first, then bytes."""
        metas = [e.meta for e in evictions]
        self._forget([m.entry_id for m in metas])
        async with self._mutations:
            try:
                await self._io(lambda: self.vectors.delete([m.entry_id for m in metas]), "vector delete")
            except Unavailable:
                self._restore(metas)  # still findable: keep accounting for them, retry later
                log.exception("eviction failed; entries kept")
                return
            with contextlib.suppress(Unavailable):
                await self._io(lambda: self.objects.delete([m.object_key for m in metas]), "object delete")
        for eviction in evictions:
            self.counters[eviction.meta.tenant].evictions += 1
            metrics.EVICTIONS.labels(eviction.reason).inc()

    def _forget(self, entry_ids: Iterable[str]) -> None:
        if self._removed_during_reconcile is not None:
            self._removed_during_reconcile.update(entry_ids)

    def _restore(self, metas: Iterable[EntryMeta]) -> None:
        for meta in metas:
            if meta.entry_id not in self.ledger:
                self.ledger.add(meta)

    async def flush_stats(self) -> int:
        """Persist hit bookkeeping of entries hit since the last flush; returns rows written."""
        # A pending entry's row is not written yet: its hits wait for the next flush.
        ids = self._dirty - self._pending.keys()
        if not ids:
            return 0
        self._dirty -= ids
        updates = [
            StatsUpdate(m.entry_id, m.last_hit_at, m.hit_count, m.saved_steps)
            for i in ids
            if (m := self.ledger.get(i)) is not None
        ]
        async with self._mutations:
            # Entries deleted while we waited for the lock must not be written back.
            updates = [u for u in updates if u.entry_id in self.ledger]
            try:
                await self._io(lambda: self.vectors.update_stats(updates), "stats update")
            except Unavailable:
                self._dirty |= {u.entry_id for u in updates}
                raise
        return len(updates)

    async def expire(self) -> int:
        expired = self.ledger.plan_expiry(self.limits.ttl_seconds, self._clock(), protect=self._pinned())
        if expired:
            await self._purge(expired)
            self._update_gauges()
        return len(expired)

    def _every(self, seconds: float, action: Callable[[], Awaitable[object]], what: str) -> None:
        """Run `action` every `seconds` until close(); a failure is logged and retried next time."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await action()
                except Exception:
                    log.exception(f"{what} failed; will retry")

        self._tasks.append(asyncio.create_task(loop(), name=f"cache: {what}"))

    # --- helpers ------------------------------------------------------------------------

    def _expired(self, meta: EntryMeta, now: float) -> bool:
        ttl = self.limits.ttl_seconds
        return ttl is not None and meta.created_at < now - ttl

    async def _io(self, fn: Callable[[], T], what: str) -> T:
        """Run a blocking store call on the I/O pool; store outages become Unavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except StoreUnavailable as exc:
            raise Unavailable(f"{what} failed: {exc}") from exc

    def _meta_of(self, record: VectorRecord) -> EntryMeta:
        return EntryMeta(
            entry_id=record.entry_id,
            tenant=record.tenant,
            size_bytes=record.size_bytes,
            created_at=record.created_at,
            object_key=record.object_key,
            last_hit_at=record.last_hit_at,
            hit_count=record.hit_count,
            saved_steps=record.saved_steps,
            shared=record.shared,
            params_key=record.params_key,
            seed=record.seed,
        )

    def _entry_of(self, record: VectorRecord) -> Entry:
        meta = self.ledger.get(record.entry_id)  # the ledger's hit bookkeeping is the newest
        try:
            extra = json.loads(record.extra or "{}")
        except json.JSONDecodeError:
            extra = {}
        params = extra.get("params")
        return Entry(
            entry_id=record.entry_id,
            tenant=record.tenant,
            shared=record.shared,
            prompt=record.prompt,
            model_id=record.model_id,
            size_bytes=record.size_bytes,
            width=record.width,
            height=record.height,
            created_at=record.created_at,
            last_hit_at=meta.last_hit_at if meta else record.last_hit_at,
            hit_count=meta.hit_count if meta else record.hit_count,
            saved_steps=meta.saved_steps if meta else record.saved_steps,
            metadata=dict(extra.get("metadata") or {}),
            params=GenParams.from_dict(params) if isinstance(params, dict) else None,
        )

    def _update_gauges(self) -> None:
        total = self.ledger.total
        metrics.ENTRIES.set(total.entries)
        metrics.BYTES.set(total.bytes)
