"""The cache's pieces stopped and restarted under traffic, on real processes: a router over a tiny
worker and the cache service (Milvus Lite inside it, MiniLM) with a test-owned SeaweedFS as S3.

- The cache service (and with it Milvus Lite) stopped: requests are served as misses and say the
  cache is unavailable; after a restart on the same port the router uses it again.
- The S3 server stopped: requests are still served (a hit whose bytes cannot be fetched becomes a
  miss); after its restart the entries come back.
Afterwards every entry acknowledged before the faults is still retrievable, and Reconcile finds
no vector without its object and no object without its vector.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import modm
from modm.launch import ServiceProcess, free_port
from tests.integration.cache_helpers import S3, CacheClient, new_bucket, seaweed
from tests.integration.test_router_stack import start_router, wait_for_pools
from tests.procs import start_cache, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 2
TENANT = "faults"


@dataclass
class Stack:
    s3: S3
    cache: ServiceProcess
    cache_settings: dict[str, object]
    cache_dir: Path
    worker: ServiceProcess
    router: ServiceProcess
    log_dir: Path


def cache_on(port: int, data_dir: Path, log_dir: Path, settings: dict[str, object]) -> ServiceProcess:
    """The cache on a fixed port, so the router's configured address finds the restarted one."""
    return dataclasses.replace(start_cache(data_dir, log_dir, port=port, **settings), port=port)


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fault-cache")
    with seaweed(root / "s3") as s3:
        settings = {**s3.settings(new_bucket()), "log_format": "text", "reconcile_grace_seconds": 0}
        cache = cache_on(free_port(), root / "cache", root, settings)
        worker = start_worker(tiny_model("sd3"), root, role="large", log_format="text", warmup="false")
        router = None
        built = None
        try:
            cache.wait_serving(timeout=180)
            worker.wait_serving(timeout=300)
            router = start_router(root, worker.address, "", cache.address, cache_timeout_s=3)
            router.wait_serving()
            built = Stack(s3, cache, settings, root / "cache", worker, router, root)
            yield built
        finally:
            if router is not None:
                router.stop()
            worker.stop()
            (built.cache if built else cache).stop()  # the test restarts it


def generate(client: modm.Client, prompt: str) -> modm.GenerateResult:
    return client.generate(prompt, steps=STEPS, seed=7, tenant=TENANT)


def entries(cache: CacheClient) -> int:
    return int(cache.stats(TENANT).total.entries)


def test_cache_s3_and_milvus_lite_restarts_lose_nothing(stack: Stack) -> None:
    prompts = [f"a {color} bicycle leaning on a {thing}" for color, thing in
               [("red", "wall"), ("blue", "tree"), ("green", "fence"), ("yellow", "lamp post")]]  # fmt: skip
    with modm.Client(stack.router.address, timeout=120, retries=0) as client:
        wait_for_pools(client, {"large"})
        cache = CacheClient(stack.cache.address)
        try:
            for prompt in prompts:
                assert generate(client, prompt).insert_scheduled
            deadline = time.monotonic() + 60
            while entries(cache) < len(prompts):  # inserts are acknowledged after the replies
                assert time.monotonic() < deadline, cache.stats(TENANT)
                time.sleep(0.3)
            acknowledged = {p: cache.lookup(TENANT, p).decision.entry_id for p in prompts}
            assert all(acknowledged.values())
        finally:
            cache.close()

        # 1. The cache service (Milvus Lite lives in it) goes away, then comes back on its port.
        assert stack.cache.stop() == 0
        away = [generate(client, prompt) for prompt in prompts[:2]]
        assert all(r.outcome == "miss" and not r.cache_available for r in away)
        assert client.stats()["cache_available"] is False
        stopped = time.monotonic()
        stack.cache = cache_on(stack.cache.port, stack.cache_dir, stack.log_dir, stack.cache_settings)
        stack.cache.wait_serving(timeout=180)
        back = generate(client, prompts[0])
        while back.outcome != "exact_repeat":  # the router's channel reconnects by itself
            assert time.monotonic() - stopped < 120, back.metadata()
            time.sleep(0.5)
            back = generate(client, prompts[0])
        cache_recovery_s = time.monotonic() - stopped
        assert back.cache_available

        # 2. The S3 server goes away: lookups still work, fetches fail, requests are served as misses.
        stack.s3.server.stop()
        during = [generate(client, prompt) for prompt in prompts[1:3]]
        assert all(r.outcome == "miss" and r.image.size == (128, 128) for r in during), [r.cache_note for r in during]
        stopped = time.monotonic()
        stack.s3.server.start()
        stack.s3.server.wait_ready()
        again = generate(client, prompts[1])
        while again.outcome != "exact_repeat":
            assert time.monotonic() - stopped < 120, again.metadata()
            time.sleep(0.5)
            again = generate(client, prompts[1])
        s3_recovery_s = time.monotonic() - stopped

    cache = CacheClient(stack.cache.address)
    try:
        for prompt, entry_id in acknowledged.items():  # nothing acknowledged was lost
            assert cache.fetch(TENANT, entry_id).image, prompt
        first = cache.reconcile(grace_seconds=0)
        second = cache.reconcile(grace_seconds=0)
        assert (second.stale_vectors_removed, second.orphan_objects_removed) == (0, 0)
        assert second.vectors_scanned == second.objects_scanned >= len(prompts)
    finally:
        cache.close()
    print(
        f"\nFAULT cache: cache_recovery_s={cache_recovery_s:.1f} s3_recovery_s={s3_recovery_s:.1f} "
        f"served_while_cache_away={len(away)} served_while_s3_away={len(during)} "
        f"reconcile_first=({first.stale_vectors_removed} stale, {first.orphan_objects_removed} orphans)"
    )
