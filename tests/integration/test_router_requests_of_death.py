"""Requests of death through the whole path: a router over two real tiny workers armed with the
test-only fault hook (`test_faults`). A prompt the pipeline fails on, co-batched with good ones,
fails alone, is tried on one other worker only, and ejects nobody; an out-of-memory reaches the
client as out of memory (FAILED_PRECONDITION over gRPC, 422 over HTTP; never queue-full or 429),
after at most one retry, and the next request on those workers succeeds."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import modm
from modm.client import FailedPreconditionError, OutOfMemoryError
from modm.launch import ServiceProcess, free_port
from tests.integration.test_openai_api import http, wait_ready
from tests.integration.test_router_stack import wait_for_pools
from tests.procs import start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = json.dumps({"POISON": "error", "OOM-ME": "oom"})
STEPS = 2


@dataclass
class Stack:
    workers: list[ServiceProcess]
    router: ServiceProcess
    metrics_port: int
    http_port: int


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("requests-of-death")
    workers = [
        start_worker(
            tiny_model("sd"),
            root,
            role="large",
            test_faults=FAULTS,
            max_batch_size=4,
            batch_window_ms=500,
            unhealthy_after_failures=2,
            log_format="text",
        )
        for _ in range(2)
    ]
    procs = list(workers)
    try:
        for worker in workers:
            worker.wait_serving(timeout=300)
        metrics_port, http_port = free_port(), free_port()
        router = start_router(root, ",".join(w.address for w in workers), "", None, metrics_port=metrics_port,
                              http_port=http_port, eject_after_failures=1)  # fmt: skip
        procs.append(router)
        router.wait_serving()
        wait_ready(f"http://127.0.0.1:{http_port}")
        yield Stack(workers, router, metrics_port, http_port)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[modm.Client]:
    with modm.Client(stack.router.address, timeout=300) as c:
        wait_for_pools(c, {"large"})
        yield c


def retries(stack: Stack) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "modm_router_retries"
        for sample in family.samples
        if sample.name == "modm_router_retries_total"
    )


def nobody_ejected(client: modm.Client, stack: Stack) -> list[dict[str, Any]]:
    workers = client.stats()["workers"]
    assert {w["address"] for w in workers} == {w.address for w in stack.workers}
    assert all(w["healthy"] and not w.get("ejected", False) for w in workers), workers
    return workers


def test_a_poisoned_prompt_among_good_ones_fails_alone_and_ejects_nobody(client: modm.Client, stack: Stack) -> None:
    prompts = ["a cat", "a dog", "a POISON fox", "an owl", "a hen", "a yak"]
    before = retries(stack)
    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [
            pool.submit(client.generate, p, steps=STEPS, seed=i, cache_policy="off") for i, p in enumerate(prompts)
        ]
    poisoned = futures[2].exception()
    assert isinstance(poisoned, FailedPreconditionError) and not isinstance(poisoned, OutOfMemoryError)
    assert "the pipeline failed" in poisoned.details and "on 2 workers" in poisoned.details, poisoned
    assert all(f.result().data for i, f in enumerate(futures) if i != 2)
    assert retries(stack) - before == 1  # tried on the other worker once, then answered
    nobody_ejected(client, stack)


def test_out_of_memory_reaches_the_client_as_out_of_memory_after_one_retry(client: modm.Client, stack: Stack) -> None:
    before = retries(stack)
    with pytest.raises(OutOfMemoryError, match="out of memory generating") as raised:
        client.generate("a OOM-ME castle", steps=STEPS, seed=1, cache_policy="off")
    assert raised.value.code == "FAILED_PRECONDITION"
    assert retries(stack) - before == 1
    status, headers, body = http(
        f"http://127.0.0.1:{stack.http_port}/v1/images/generations",
        json.dumps({"prompt": "a OOM-ME castle", "size": "128x128", "num_inference_steps": STEPS}).encode(),
        {"Content-Type": "application/json"},
    )
    error = json.loads(body)["error"]
    assert status == 422 and error["code"] == "out_of_memory" and "Retry-After" not in headers, (status, error)
    nobody_ejected(client, stack)
    for seed in range(len(stack.workers)):  # both workers serve the next request
        assert client.generate("a small castle", steps=STEPS, seed=seed, cache_policy="off").data
