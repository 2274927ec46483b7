"""The worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("modm_worker_requests_total", "Generation requests by kind and outcome.", ["kind", "outcome"])
QUEUE_DEPTH = Gauge("modm_worker_queue_depth", "Requests admitted and not yet answered.")
BATCH_SIZE = Histogram(
    "modm_worker_batch_size", "Requests per pipeline call.", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
)
REQUEST_SECONDS = Histogram(
    "modm_worker_request_seconds",
    "Arrival to reply, per request.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
)
STEP_SECONDS = Histogram(
    "modm_worker_step_seconds",
    "Seconds per denoising step of a pipeline call.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STOPPED_CALLS = Counter(
    "modm_worker_stopped_calls_total",
    "Pipeline calls stopped before their last step because every request in them was done (cancelled or timed out).",
)
PROFILED_STEP_SECONDS = Gauge("modm_worker_profiled_step_seconds", "Profiled seconds per step at the default size.")
READY = Gauge("modm_worker_ready", "1 once the pipeline is loaded and warm.")
