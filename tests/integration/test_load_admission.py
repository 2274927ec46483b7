"""A router saturated past a tiny max_queue: the overflow is refused with RESOURCE_EXHAUSTED and a
retry-after, everything admitted is served, and the queue drains back to zero afterwards.
(Throughput and latency figures are benchmarks/load.py's.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import pytest

import modm
from modm.client import ModmClientError, ResourceExhaustedError
from tests.integration.test_router_stack import wait_for_pools
from tests.procs import start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_overflow_is_refused_with_retry_after_and_the_queue_drains(
    tiny_model: Callable[[str], Path], tmp_path: Path
) -> None:
    worker = start_worker(
        tiny_model("sd3"), tmp_path, role="large", log_format="text", warmup="false", max_batch_size=1
    )
    router = None
    try:
        worker.wait_serving(timeout=300)
        router = start_router(tmp_path, worker.address, "", None, max_queue=2, attempt_timeout_floor_s=110)
        router.wait_serving()
        with modm.Client(router.address, timeout=120, retries=0) as client:
            wait_for_pools(client, {"large"})
            sent = 12
            with futures.ThreadPoolExecutor(sent) as pool:
                calls = [
                    pool.submit(client.generate, f"a queue of boats {i}", steps=2, cache_policy="off")
                    for i in range(sent)
                ]
                outcomes = [call.exception() or call.result() for call in calls]
            served = [o for o in outcomes if isinstance(o, modm.GenerateResult)]
            refused = [o for o in outcomes if isinstance(o, ModmClientError)]
            assert all(isinstance(e, ResourceExhaustedError) for e in refused), refused
            assert refused and all(e.retry_after_s and e.retry_after_s > 0 for e in refused)  # type: ignore[attr-defined]
            assert all("queue is full" in e.details or "would take" in e.details for e in refused)
            assert 3 <= len(served) <= sent - 1  # one in flight and two queued at least, then the overflow

            def idle() -> bool:
                pool_stats = next(p for p in client.stats()["pools"] if p["pool"] == "large")
                return pool_stats["queue_depth"] == 0 and pool_stats["in_flight"] == 0

            deadline = time.monotonic() + 30
            while not idle():
                assert time.monotonic() < deadline, client.stats()["pools"]
                time.sleep(0.2)
            after = client.generate("after the burst", steps=2, cache_policy="off")  # admitted again
            assert after.attempts == 1
            print(f"\nLOAD admission: sent={sent} served={len(served)} refused={len(refused)}")
    finally:
        if router is not None:
            router.stop()
        worker.stop()
