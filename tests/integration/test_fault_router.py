"""The router restarted under load: clients using the SDK's retries see no failure; what they do
see while the router is away is UNAVAILABLE, retried with backoff until the new router answers."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modm
from modm.client import ModmClientError
from modm.launch import ServiceProcess, free_port
from tests.integration.test_router_stack import start_router, wait_for_pools
from tests.procs import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def router_on(port: int, log_dir: Path, worker: str) -> ServiceProcess:
    """A router on a fixed port, so a restarted one is where clients already point."""
    router = start_router(log_dir, worker, "", None, port=port, attempt_timeout_floor_s=110)
    return dataclasses.replace(router, port=port)


def test_router_restart_under_load_is_invisible_to_retrying_clients(
    tiny_model: Callable[[str], Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = start_worker(tiny_model("sd3"), tmp_path, role="large", log_format="text", warmup="false")
    port = free_port()
    router = None
    answered: list[modm.GenerateResult] = []
    failed: list[ModmClientError] = []
    stop = threading.Event()
    try:
        worker.wait_serving(timeout=300)
        router = router_on(port, tmp_path, worker.address)
        router.wait_serving()
        with modm.Client(router.address, timeout=120, retries=30, backoff=0.1) as client:
            wait_for_pools(client, {"large"})

            def load(n: int) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        answered.append(client.generate(f"a kite {n}-{i}", steps=2, cache_policy="off"))
                    except ModmClientError as error:
                        failed.append(error)
                    i += 1

            threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
            caplog.set_level(logging.INFO, logger="modm.client")
            for thread in threads:
                thread.start()
            while len(answered) < 2:
                time.sleep(0.1)
            assert router.stop() == 0  # SIGTERM: drains what it holds, refuses what comes next
            stopped_at, before = time.monotonic(), len(answered)
            router = router_on(port, tmp_path, worker.address)
            while len(answered) < before + 2:  # served by the new router
                assert not failed, failed
                time.sleep(0.1)
            recovered_s = time.monotonic() - stopped_at
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        retries = [r for r in caplog.records if "router UNAVAILABLE, retry" in r.getMessage()]
        assert not failed, failed
        assert retries, "no call met the restart"
        print(
            f"\nFAULT router-restart: answered={len(answered)} failed={len(failed)} "
            f"unavailable_retries={len(retries)} recovered_s={recovered_s:.1f}"
        )
    finally:
        stop.set()
        if router is not None:
            router.stop()
        worker.stop()
