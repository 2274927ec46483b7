"""The monitor loses the Kubernetes API (emulator stopped, then answering 500s, then slow): it backs
off (retries with growing pauses), keeps the last allocation, recovers, never scales to zero.
The monitor is the real one (serve: Stats client, loop, Lease, scaler) against a canned router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modm.services.monitor.server import serve
from modm.services.monitor.settings import MonitorSettings
from modm.serving import ServiceHost
from tests.integration.test_monitor_loop_k8s import LARGE, SMALL, router  # noqa: F401 - the fixture
from tests.k8s_emulator import DEPLOYMENTS, Emulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        emu.create_deployment(LARGE, 3)
        emu.create_deployment(SMALL, 1)
        yield emu


async def until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    for _ in range(int(within_s / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {within_s}s")


async def test_monitor_rides_out_a_lost_kubernetes_api(
    router: tuple[str, object],  # noqa: F811
    emulator: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modm.services.monitor")
    address, _ = router
    settings = MonitorSettings(
        port=0,
        kubeconfig=str(emulator.write_kubeconfig(tmp_path / "kubeconfig")),
        large_deployment=LARGE,
        small_deployment=SMALL,
        routers=[address],
        total_gpus=4,
        interval_s=0.3,
        stats_timeout_s=2.0,
        api_retries=2,
        backoff_seconds=0.05,
        backoff_max_seconds=0.2,
        request_timeout_seconds=0.5,
        lease_duration_seconds=120,
        renew_deadline_seconds=90,
        retry_period_seconds=0.1,
    )
    host = ServiceHost(settings, [], handle_signals=False)
    task = asyncio.create_task(serve(settings, host))

    def replicas() -> tuple[int, int]:
        return tuple(emulator.get(DEPLOYMENTS, "default", n)["spec"]["replicas"] for n in (LARGE, SMALL))  # type: ignore[return-value]

    def failed_rounds() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "monitor round failed" and r.stage == "scaler")

    def applied_rounds() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "decision" and r.applied)

    try:
        await until(lambda: replicas()[1] > 1, 30, "the first move to the small pool")
        allocation = replicas()
        phases: dict[str, int] = {}
        for phase in ("down", "500"):
            if phase == "down":
                emulator.go_down()
            else:
                emulator.come_back()
                emulator.fail_next(500, times=10_000)
            start = failed_rounds()
            await until(lambda s=start: failed_rounds() >= s + 2, 60, f"two failed rounds ({phase})")
            phases[phase] = failed_rounds() - start
            assert replicas() == allocation  # the last allocation stands
        emulator.clear_faults()
        emulator.slow(0.3)  # slow but within request_timeout_seconds: rounds take longer and still land
        applied = applied_rounds()
        await until(lambda: applied_rounds() >= applied + 2, 60, "two applied rounds while slow")
        assert replicas() == allocation
        emulator.slow(0)
        applied = applied_rounds()
        await until(lambda: applied_rounds() > applied, 30, "an applied round after recovery")
    finally:
        host.request_stop()
        await asyncio.wait_for(task, 30)
    retried = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retried and any("500" in m for m in retried)
    pauses = [float(m.rsplit("retrying in ", 1)[1].rstrip("s")) for m in retried]
    assert max(pauses) > min(pauses)  # the pauses grow (exponential, jittered)
    history = [obj["spec"]["replicas"] for (_, _, plural, obj) in emulator.store.events if plural == "deployments"]
    assert history and min(history) >= 1  # never scaled to zero
    print(f"\nFAULT k8s-api: rounds failed per phase={phases} retries={len(retried)} final={replicas()}")
