"""Worker faults on real processes: a router over tiny workers (no cache, to stay lean).

- A worker that reports SERVING but never answers is ejected after repeated timeouts and put back
  (on probation) when it recovers; requests meanwhile succeed on the healthy worker.
- A worker killed with SIGKILL while it holds requests: each request is answered once (retried on
  the other worker) or fails with DEADLINE_EXCEEDED; none hangs.

The hung worker is a gRPC server in this process (health SERVING, a plausible Info, Generate that
blocks while `stuck`), so its behaviour can be switched from the test.
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

import modm
from modm.client import DeadlineExceededError
from modm.launch import ServiceProcess
from modm.services.router.backends import WORKER_SERVICE
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.integration.test_router_stack import wait_for_pools
from tests.procs import start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 1


class HungWorker(worker_pb2_grpc.WorkerServicer):
    """SERVING on health, a fast-looking large worker in Info; Generate blocks while `stuck`."""

    def __init__(self) -> None:
        self.stuck = threading.Event()
        self.stuck.set()
        self.calls = 0
        self.answered = 0

    def Info(self, request: worker_pb2.InfoRequest, context: grpc.ServicerContext) -> worker_pb2.WorkerInfo:
        return worker_pb2.WorkerInfo(
            model_id="hung",
            family="fake",
            role=worker_pb2.WORKER_ROLE_LARGE,
            max_batch_size=4,
            default_width=128,
            default_height=128,
            default_steps=STEPS,
            size_multiple=8,
            seconds_per_step=0.001,  # looks fastest: least outstanding work, so it is chosen first
        )

    def TextToImageStream(
        self, request: worker_pb2.TextToImageRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.GenerationEvent]:
        self.calls += 1
        while self.stuck.is_set() and context.is_active():
            time.sleep(0.05)
        if not context.is_active():
            return
        buffer = io.BytesIO()
        Image.new("RGB", (request.params.width or 128, request.params.height or 128)).save(buffer, "PNG")
        self.answered += 1
        yield worker_pb2.GenerationEvent(
            result=worker_pb2.GeneratedImage(
                image=buffer.getvalue(),
                format=common_pb2.IMAGE_FORMAT_PNG,
                width=request.params.width or 128,
                height=request.params.height or 128,
                seed=request.params.seed,
                steps_run=STEPS,
                batch_size=1,
                model_id="hung",
            )
        )


@dataclass
class Hung:
    servicer: HungWorker
    address: str


@pytest.fixture(scope="module")
def hung() -> Iterator[Hung]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = HungWorker()
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    for service in ("", WORKER_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Hung(servicer, f"127.0.0.1:{port}")
    server.stop(0)


@pytest.fixture(scope="module")
def workers(
    tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    root = tmp_path_factory.mktemp("fault-workers")
    # The first warms up: its Info then has a measured speed, so the router's attempt timeout
    # (estimate x factor) suits it while the hung one's (which claims to be fast) stays short.
    procs = [
        start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=2, warmup=warm)
        for warm in ("true", "false")
    ]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        yield procs
    finally:
        for proc in procs:
            proc.stop(signal.SIGKILL)


def pool_workers(client: modm.Client, pool: str = "large") -> int:
    return next((p["workers"] for p in client.stats()["pools"] if p["pool"] == pool), 0)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took `predicate` to hold; fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} did not happen within {timeout}s"
        time.sleep(0.2)
    return time.monotonic() - start


def generate(client: modm.Client, prompt: str) -> modm.GenerateResult:
    return client.generate(prompt, steps=STEPS, cache_policy="off")


def pair(client: modm.Client, prompt: str) -> list[modm.GenerateResult]:
    """Two requests at once: with both workers idle, each gets one (least outstanding work)."""
    with futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(generate, [client, client], [f"{prompt} {i}" for i in range(2)]))


def test_a_serving_worker_that_hangs_is_ejected_and_put_back(
    workers: list[ServiceProcess], hung: Hung, tmp_path: Path
) -> None:
    healthy = workers[0]
    router = start_router(
        tmp_path,
        f"{healthy.address},{hung.address}",
        "",
        None,
        attempt_timeout_floor_s=0.5,
        attempt_timeout_factor=20,
        eject_cooldown_s=30,  # outlasts a request on a slow machine; ends before the wait below
    )
    try:
        router.wait_serving()
        with modm.Client(router.address, timeout=60, retries=0) as client:
            wait_until(lambda: pool_workers(client) == 2, 60, "both workers discovered")
            ejected = lambda: "worker ejected" in router.log_path.read_text()  # noqa: E731
            results: list[modm.GenerateResult] = []
            with futures.ThreadPoolExecutor(2) as pool:
                while not ejected():  # a pair at a time: with both workers idle, one goes to each
                    assert len(results) < 12, "the hung worker was never ejected"
                    calls = [pool.submit(generate, client, f"a lighthouse {len(results) + i}") for i in range(2)]
                    while not (all(c.done() for c in calls) or ejected()):
                        time.sleep(0.1)
                    if ejected():
                        time.sleep(1.5)  # three discovery rounds: each probe of the hung worker says SERVING
                        assert pool_workers(client) == 1  # out of rotation all the same
                        shown = {w["address"]: w for w in client.stats()["workers"]}[hung.address]
                        assert shown["healthy"] and shown["ejected"], shown  # Stats say why it gets nothing
                    results += [c.result() for c in calls]
            assert all(r.worker == healthy.address for r in results)  # every request still answered
            timeouts = hung.servicer.calls
            assert timeouts == 3 and sum(r.attempts - 1 for r in results) == timeouts
            later = pair(client, "a windmill")
            assert all(r.attempts == 1 and r.worker == healthy.address for r in later)
            assert hung.servicer.calls == timeouts
            hung.servicer.stuck.clear()  # it recovers; after the cool-down it gets requests again
            wait_until(lambda: pool_workers(client) == 2, 60, "the cool-down ended")
            back = pair(client, "a harbour at dawn")
            assert {r.worker for r in back} == {healthy.address, hung.address} and hung.servicer.answered == 1
            assert all(r.attempts == 1 for r in back)
            sent = len(results) + len(later) + len(back)
            print(f"\nFAULT hung-worker: sent={sent} answered={sent} retried={timeouts} ejected_after={timeouts}")
    finally:
        assert router.stop() == 0, router.log_tail()


def test_sigkill_of_a_worker_holding_requests(workers: list[ServiceProcess], tmp_path: Path) -> None:
    victim, survivor = workers
    sent, deadline_s = 4, 120.0
    # No attempt may time out before the deadline: the survivor has no measured speed to judge by.
    router = start_router(
        tmp_path, f"{victim.address},{survivor.address}", "", None, attempt_timeout_floor_s=deadline_s
    )
    outcomes: dict[int, modm.GenerateResult | Exception] = {}
    try:
        router.wait_serving()
        with modm.Client(router.address, timeout=deadline_s, retries=0) as client:
            wait_for_pools(client, {"large"})
            wait_until(lambda: pool_workers(client) == 2, 60, "both workers discovered")

            def send(i: int) -> None:
                try:
                    outcomes[i] = client.generate(f"a fox in the snow {i}", steps=6, seed=i, cache_policy="off")
                except Exception as error:  # anything but an answer or DEADLINE_EXCEEDED fails below
                    outcomes[i] = error

            threads = [threading.Thread(target=send, args=(i,)) for i in range(sent)]
            for thread in threads:
                thread.start()

            def victim_busy() -> bool:
                report = client.stats()
                return any(w["address"] == victim.address and w["in_flight"] > 0 for w in report["workers"])

            wait_until(victim_busy, 60, "the victim took requests")
            killed_at = time.monotonic()
            victim.proc.send_signal(signal.SIGKILL)
            for thread in threads:
                thread.join(timeout=deadline_s + 10)
            recovered_s = time.monotonic() - killed_at
            assert not any(thread.is_alive() for thread in threads), "a request hung"
            answered = [r for r in outcomes.values() if isinstance(r, modm.GenerateResult)]
            failed = [e for e in outcomes.values() if not isinstance(e, modm.GenerateResult)]
            assert len(outcomes) == sent and all(isinstance(e, DeadlineExceededError) for e in failed), outcomes
            retried = [r for r in answered if r.attempts > 1]
            assert retried and all(r.worker == survivor.address for r in retried)
            assert len({r.request_id for r in answered}) == len(answered)
            # Each answer was produced once: the router saw as many completions as clients got answers.
            completed = sum(w["completed"] for w in client.stats()["workers"])
            assert completed == len(answered)
            print(
                f"\nFAULT worker-sigkill: sent={sent} answered={len(answered)} retried={len(retried)} "
                f"failed={len(failed)} recovered_s={recovered_s:.1f}"
            )
    finally:
        assert router.stop() == 0, router.log_tail()
