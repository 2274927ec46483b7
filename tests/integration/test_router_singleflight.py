"""Single-flight on real processes: cache (Milvus Lite, SeaweedFS, MiniLM), one tiny large worker
(sd3) with one slot, and a router. Ten identical requests at once run the large model once and
make one cache entry; when the first caller goes away, the other nine still get the image.

The first request is a raw stream, so the test knows it leads (it has started on the worker) and
can cancel it; the other nine are sent once it runs, and the router's
`modm_router_singleflight_waiting` gauge says when all of them wait for it.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import modm
from modm.client import GenerateResult
from modm.launch import ServiceProcess, free_port
from modm.v1 import cache_pb2, cache_pb2_grpc, common_pb2, router_pb2, router_pb2_grpc
from tests.integration.test_router_stack import wait_for_pools
from tests.procs import start_cache, start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 50  # long enough on a tiny model for nine requests to join while it runs
SEED = 11
FOLLOWERS = 9
TIMEOUT_S = 500.0  # generous: a shared CPU may run far slower than the worker profiled


@dataclass
class Stack:
    cache: ServiceProcess
    large: ServiceProcess
    router: ServiceProcess
    metrics_port: int


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("singleflight")
    cache = start_cache(root / "cache", root, log_format="text")
    large = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=1)
    procs = [cache, large]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        metrics_port = free_port()
        router = start_router(root, large.address, "", cache.address, metrics_port=metrics_port)
        procs.append(router)
        router.wait_serving()
        yield Stack(cache, large, router, metrics_port)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[modm.Client]:
    with modm.Client(stack.router.address, timeout=TIMEOUT_S) as c:
        wait_for_pools(c, {"large"})
        yield c


def large_completed(client: modm.Client, stack: Stack) -> int:
    return next(w["completed"] for w in client.stats()["workers"] if w["address"] == stack.large.address)


def waiting(stack: Stack) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "modm_router_singleflight_waiting":
            return family.samples[0].value
    return 0.0


def cache_entries(stack: Stack) -> int:
    with grpc.insecure_channel(stack.cache.address) as channel:
        return cache_pb2_grpc.CacheStub(channel).Stats(cache_pb2.StatsRequest(), timeout=10).total.entries


def lead_and_follow(
    stack: Stack, client: modm.Client, prompt: str, *, cancel_leader: bool
) -> tuple[router_pb2.GenerateResponse | None, list[GenerateResult]]:
    """The leader's stream until it has started on the worker, then the followers; once all of
    them wait, the leader is read to its end or cancelled."""
    params = common_pb2.GenerationParams(prompt=prompt, steps=STEPS, seed=SEED)
    with grpc.insecure_channel(stack.router.address) as channel, ThreadPoolExecutor(FOLLOWERS) as pool:
        request = router_pb2.GenerateRequest(params=params)
        leader = router_pb2_grpc.RouterStub(channel).GenerateStream(request, timeout=TIMEOUT_S)
        while next(leader).WhichOneof("event") != "started":
            pass
        followers = [pool.submit(client.generate, prompt, steps=STEPS, seed=SEED) for _ in range(FOLLOWERS)]
        deadline = time.monotonic() + TIMEOUT_S
        while waiting(stack) < FOLLOWERS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting(stack) == FOLLOWERS, "the followers did not all wait for the leader"
        if cancel_leader:
            leader.cancel()
            first = None
        else:
            first = next(e.result for e in leader if e.WhichOneof("event") == "result")
        return first, [f.result() for f in followers]


def wait_for_inserts(client: modm.Client) -> None:
    deadline = time.monotonic() + 60
    while client.stats()["inserts_pending"] and time.monotonic() < deadline:
        time.sleep(0.1)


def test_ten_identical_requests_run_the_large_model_once_and_make_one_entry(stack: Stack, client: modm.Client) -> None:
    before = large_completed(client, stack)
    first, followers = lead_and_follow(stack, client, "a lighthouse asked ten times at once", cancel_leader=False)
    assert first is not None and first.cache.outcome == router_pb2.CACHE_OUTCOME_MISS
    assert {r.outcome for r in followers} == {"exact_repeat"}
    assert {r.data for r in followers} == {first.image} and {r.seed for r in followers} == {SEED}
    assert all(r.pool == "cache" and r.worker == "" for r in followers)
    assert large_completed(client, stack) - before == 1
    assert client.stats()["outcomes"]["exact_repeat"] >= FOLLOWERS
    wait_for_inserts(client)
    assert cache_entries(stack) == 1


def test_the_others_get_the_image_when_the_first_caller_goes_away(stack: Stack, client: modm.Client) -> None:
    before, entries = large_completed(client, stack), cache_entries(stack)
    _, followers = lead_and_follow(stack, client, "a harbor whose first asker hung up", cancel_leader=True)
    assert {r.outcome for r in followers} == {"exact_repeat"} and len({r.data for r in followers}) == 1
    assert large_completed(client, stack) - before == 1
    wait_for_inserts(client)
    assert cache_entries(stack) == entries + 1
