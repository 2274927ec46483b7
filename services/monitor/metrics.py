"""The monitor's Prometheus metrics (served on `metrics_port` by `ServiceHost`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALLOCATION = Gauge("modm_monitor_allocation", "Live replicas per pool, as the scaler last read them.", ["pool"])
TARGET = Gauge("modm_monitor_target", "Replicas per pool the last decision asked for.", ["pool"])
DECISIONS = Counter(
    "modm_monitor_decisions_total",
    "Decisions by action (move or keep) and whether they were applied (only the Lease holder applies).",
    ["action", "applied"],
)
ERRORS = Counter("modm_monitor_errors_total", "Failed loop stages: stats, scaler, policy, apply, degrade.", ["stage"])
DEGRADE = Gauge("modm_monitor_degrade_misses", "1 while the last decision says misses should go to the small pool.")
DEGRADE_UNREACHABLE = Gauge(
    "modm_monitor_degrade_unreachable_routers", "Routers that did not take the last degrade override."
)
UNREACHABLE = Gauge("modm_monitor_unreachable_routers", "Routers that did not answer the last Stats round.")
LEADER = Gauge("modm_monitor_leader", "1 while this replica holds the Lease.")
LAST_ITERATION = Gauge("modm_monitor_last_iteration_timestamp_seconds", "When the loop last finished a round.")
