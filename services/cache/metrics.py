"""The cache's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOOKUPS = Counter("modm_cache_lookups_total", "Lookups by outcome (hit, miss, exact_repeat).", ["outcome"])
INSERTS = Counter("modm_cache_inserts_total", "Entries inserted.")
EVICTIONS = Counter("modm_cache_evictions_total", "Entries evicted, by reason.", ["reason"])
STALE_REMOVED = Counter(
    "modm_cache_stale_vectors_removed_total", "Vectors removed because their image bytes were gone."
)
ORPHANS_REMOVED = Counter("modm_cache_orphan_objects_removed_total", "Objects removed that no vector referenced.")
ENTRIES = Gauge("modm_cache_entries", "Entries in the cache.")
BYTES = Gauge("modm_cache_bytes", "Image bytes in the cache.")
LOOKUP_SECONDS = Histogram(
    "modm_cache_lookup_seconds",
    "Lookup latency by phase (embed, search, total).",
    ["phase"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
READY = Gauge("modm_cache_ready", "1 once the stores are reachable and the ledger is loaded.")
