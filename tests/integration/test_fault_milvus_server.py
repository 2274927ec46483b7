"""The Milvus standalone server killed (-9) and restarted under router traffic, on real processes:
a router over a tiny worker and the cache service on that server, SeaweedFS as S3.

While Milvus is away every request is still answered (as a miss: the router's cache call has a
deadline); after the restart the cache finds its entries again without being restarted itself,
every entry acknowledged before the fault is retrievable, and Reconcile finds nothing to fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modm
from tests.integration.cache_helpers import CacheClient, new_bucket, seaweed
from tests.integration.test_fault_cache import TENANT, entries, generate
from tests.integration.test_router_stack import start_router, wait_for_pools
from tests.procs import start_cache, start_milvus_server, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_milvus_server_restart_under_traffic_loses_nothing(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    prompts = ["a copper kettle on a stove", "a paper boat on a puddle", "a fox asleep under a pine"]
    with seaweed(tmp_path / "s3") as s3:
        milvus = start_milvus_server(tmp_path / "milvus", tmp_path)
        procs = []
        try:
            milvus.wait_ready()
            settings = {**s3.settings(new_bucket()), "milvus_uri": milvus.uri, "log_format": "text"}
            cache = start_cache(tmp_path / "cache", tmp_path, reconcile_grace_seconds=0, **settings)
            worker = start_worker(tiny_model("sd3"), tmp_path, role="large", log_format="text", warmup="false")
            procs += [cache, worker]
            cache.wait_serving(timeout=180)
            worker.wait_serving(timeout=300)
            router = start_router(tmp_path, worker.address, "", cache.address, cache_timeout_s=3)
            procs.append(router)
            router.wait_serving()
            with modm.Client(router.address, timeout=120, retries=0) as client, CacheClient(cache.address) as store:
                wait_for_pools(client, {"large"})
                for prompt in prompts:
                    assert generate(client, prompt).insert_scheduled
                deadline = time.monotonic() + 60
                while entries(store) < len(prompts):  # inserts are acknowledged after the replies
                    assert time.monotonic() < deadline, store.stats(TENANT)
                    time.sleep(0.3)
                acknowledged = {p: store.lookup(TENANT, p).decision.entry_id for p in prompts}

                milvus.stop()  # kill -9
                away = [generate(client, f"{prompt}, while the index is away") for prompt in prompts[:2]]
                assert all(r.outcome == "miss" and r.image.size == (128, 128) for r in away)
                stopped = time.monotonic()
                milvus = start_milvus_server(tmp_path / "milvus", tmp_path)
                milvus.wait_ready()
                back = generate(client, prompts[0])
                while back.outcome != "exact_repeat":  # the running cache finds its collection again
                    assert time.monotonic() - stopped < 240, back.metadata()
                    time.sleep(2)
                    back = generate(client, prompts[0])
                recovery_s = time.monotonic() - stopped

                for prompt, entry_id in acknowledged.items():  # nothing acknowledged was lost
                    assert store.fetch(TENANT, entry_id).image, prompt
                store.reconcile(grace_seconds=0)  # inserts that failed while Milvus was away leave objects
                again = store.reconcile(grace_seconds=0)
                assert (again.stale_vectors_removed, again.orphan_objects_removed) == (0, 0)
                assert again.vectors_scanned == again.objects_scanned >= len(prompts)
            print(f"\nFAULT milvus-server: served_while_away={len(away)} recovery_s={recovery_s:.1f}")
        finally:
            for proc in reversed(procs):
                proc.stop()
            milvus.stop()
