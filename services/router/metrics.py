"""The router's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

REQUESTS = Counter(
    "modm_router_requests_total",
    "Requests by cache outcome, serving pool and result (ok or the status code).",
    ["outcome", "pool", "result"],
)
LATENCY = Histogram(
    "modm_router_request_seconds",
    "Arrival to reply, by cache outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "modm_router_stage_seconds",
    "Seconds per request stage: lookup, fetch, queue, generate.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
HIT_RATE = Gauge("modm_router_hit_rate", "Share of served requests that reused the cache (window).")
SKIPPED_STEPS = Histogram(
    "modm_router_skipped_steps", "k (steps skipped of 50) of hits.", buckets=(5, 10, 15, 20, 25, 30, 40, 50)
)
QUEUE_DEPTH = Gauge("modm_router_queue_depth", "Requests waiting in the router, per pool.", ["pool"])
IN_FLIGHT = Gauge("modm_router_in_flight", "Requests dispatched to workers, per pool.", ["pool"])
WORKERS = Gauge("modm_router_workers", "Healthy workers, per pool.", ["pool"])
DEGRADED = Counter("modm_router_degraded_total", "Misses served by the small pool's text-to-image.")
RETRIES = Counter("modm_router_retries_total", "Worker attempts retried after a failure, by status.", ["code"])
CACHE_ERRORS = Counter("modm_router_cache_errors_total", "Cache calls that failed, by call.", ["call"])
INSERTS = Counter(
    "modm_router_inserts_total",
    "Cache inserts after the reply, by result (ok, error, dropped: max_pending_inserts were pending).",
    ["result"],
)
SINGLEFLIGHT_SHARED = Counter(
    "modm_router_singleflight_shared_total",
    "Requests answered with the image of an identical request generated at the same time.",
)
SINGLEFLIGHT_WAITING = Gauge(
    "modm_router_singleflight_waiting", "Requests waiting now for an identical request's generation."
)
CACHE_UP = Gauge("modm_router_cache_available", "1 while the last cache call succeeded.")
HTTP_REQUESTS = Counter(
    "modm_router_http_requests_total",
    "Calls of the OpenAI-compatible HTTP API, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "modm_router_http_request_seconds",
    "Seconds from an HTTP request's arrival to its reply, by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
IMAGE_URLS = Gauge("modm_router_image_url_bytes", "Bytes of images kept for response_format=url.")
