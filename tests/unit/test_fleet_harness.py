"""The harness check of emulated fleets: the saturation estimate on synthetic closed loops (batched
calls in staggered phases, where counting answers would be off by the work in progress), the
thresholds, the large model's capacity from its profile, and the stack meter on real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modm.bench import harness
from modm.bench.records import RequestRecord
from modm.bench.traces import TraceRequest
from modm.services.worker.device_profile import load_profile


def answered(
    index: int, worker: str, done: float, *, dispatched: float = 0.0, sent: float = 0.0, error: str = ""
) -> RequestRecord:
    """A request answered at `done`; the router handed it to `worker` at `dispatched`."""
    timings = {"generate_seconds": done - dispatched} if worker else {}
    return RequestRecord(index, "p", "", sent, sent, done, done - sent, worker=worker, timings=timings, error=error)


def closed_loop(workers: int, image_s: float, calls: int, end: float) -> list[RequestRecord]:
    """Every request handed out at once; each worker runs a first call of 1 to 4 images (the
    phases differ), then calls of 4 back to back, an image costing `image_s` whatever the batch.
    A batch's answers arrive a few milliseconds apart. The last request is sent at `end`."""
    records: list[RequestRecord] = []
    for w in range(workers):
        done = 0.0
        for call in range(calls):
            batch = 1 + w % 4 if call == 0 else 4
            done += batch * image_s
            for i in range(batch):
                records.append(answered(len(records), f"w{w}", done + 0.002 * i))
    records.append(answered(len(records), "", 1.0, sent=end))  # the last send: an exact repeat
    return records


def test_saturation_counts_the_work_in_progress_at_the_end_by_its_share() -> None:
    records = closed_loop(workers=16, image_s=1.25, calls=12, end=23.3)
    rate = harness.saturation_rps(records)
    assert rate == pytest.approx(16 / 1.25 + 1 / 23.3, rel=1e-3)  # every worker busy from the start
    naive = sum(r.done_s <= 23.3 for r in records) / 23.3  # answers so far miss the work in progress
    assert abs(naive / rate - 1) > 0.05


def test_a_worker_that_joins_late_or_idles_counts_only_what_it_served() -> None:
    busy = [answered(i, "w0", i + 1.0, dispatched=float(i)) for i in range(10)]  # one a second, from 0
    late = [answered(10 + i, "w1", 8.2 + 0.5 * i, dispatched=7.8 + 0.5 * i) for i in range(3)]  # switched in at 7.8
    last = answered(20, "w0", 12.0, dispatched=11.0, sent=9.0)
    rate = harness.saturation_rps([*busy, *late, last])
    # w0: 9 by the end; w1: 2, and half of its third (from 8.8 to 9.2); not 1 + 2 a second
    assert rate == pytest.approx((9 + 2.5) / 9.0, rel=1e-3)


def test_errors_do_not_count_and_nothing_is_no_rate() -> None:
    served = [answered(i, "w0", i + 1.0, dispatched=float(i)) for i in range(4)]
    failed = [answered(10 + i, "w0", 2.5, error="UNAVAILABLE") for i in range(5)]
    last = answered(20, "w0", 9.0, dispatched=4.0, sent=4.0)
    assert harness.saturation_rps([*served, *failed, last]) == pytest.approx(1.0)
    assert harness.saturation_rps([]) is None
    assert harness.saturation_rps([answered(0, "w0", 3.0)]) is None  # sent at 0: no span


def test_a_measured_phase_counts_only_the_work_done_within_it() -> None:
    """One worker, one image a second from 0; measuring from 2.5: the call running then (2 to 3)
    counts by its half within the span, the warm-up's calls before it not at all."""
    calls = [answered(i, "w0", i + 1.0, dispatched=float(i)) for i in range(10)]
    calls.append(answered(10, "w0", 12.0, dispatched=10.0, sent=8.5))  # the last send
    assert harness.saturation_rps(calls, start=2.5) == pytest.approx((0.5 + 5 + 0.5) / 6.0)
    assert harness.saturation_rps(calls, start=8.5) is None  # an empty span


def test_the_load_average_is_read_and_a_busy_machine_caps_the_run(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("3.41 2.02 1.10 4/612 99\n")
    assert harness.load_average(tmp_path / "loadavg") == pytest.approx(3.41)
    assert harness.load_average(tmp_path / "missing") is None
    busy = harness.check(
        "modm", duration_s=10.0, cpu_seconds={}, saturation_wall_rps=1.0, capacity_rps=None, loads=[2.0, 3.4], cores=2
    )
    assert busy.failures == ("the machine's 1-minute load average reached 3.40 (limit 3 on 2 cores)",)
    assert busy.to_dict()["max_load_average"] == 3.4 and busy.to_dict()["load_average_limit"] == 3.0
    calm = harness.check(
        "modm", duration_s=10.0, cpu_seconds={}, saturation_wall_rps=1.0, capacity_rps=None, loads=[3.0], cores=2
    )
    assert not calm.capped_by_machine


def test_the_check_names_what_capped_the_run() -> None:
    fine = harness.check(
        "large-only",
        duration_s=10.0,
        cpu_seconds={"router": 4.0, "cache": 0.0, "workers": 9.0},
        saturation_wall_rps=9.7,
        capacity_rps=10.0,
    )
    assert not fine.capped_by_machine and fine.capacity_ratio == pytest.approx(0.97)
    assert fine.cpu_share["workers"] == pytest.approx(0.9)  # reported, not checked
    slow = harness.check(
        "large-only", duration_s=10.0, cpu_seconds={"router": 6.0}, saturation_wall_rps=9.0, capacity_rps=10.0
    )
    assert slow.capped_by_machine and len(slow.failures) == 2
    assert "router used 60% of a core" in slow.failures[0] and "90% of its GPUs' capacity" in slow.failures[1]
    busy_cache = harness.check(
        "modm", duration_s=10.0, cpu_seconds={"cache": 5.5}, saturation_wall_rps=1.0, capacity_rps=10.0
    )
    assert busy_cache.failures == ("the cache used 55% of a core (limit 50%)",)  # capacity: large-only's alone
    assert busy_cache.to_dict()["max_cpu_share"] == harness.MAX_CPU_SHARE


def test_capacity_is_gpus_over_the_scaled_image_time_at_each_requests_size() -> None:
    profile = load_profile("sd3.5-large-a100").scaled(0.1)
    image_s = profile.overhead_seconds + profile.default_steps * profile.seconds_per_step
    assert image_s == pytest.approx(1.256, abs=1e-3)
    default = [TraceRequest(0.0, "a castle")]
    assert harness.large_capacity_rps(profile, 16, default) == pytest.approx(16 / image_s)
    quarter = [TraceRequest(0.0, "a castle", params={"width": 512, "height": 512, "steps": 14})]
    expected = 16 / (profile.overhead_seconds / 4 + 14 * profile.seconds_per_step / 4)
    assert harness.large_capacity_rps(profile, 16, quarter) == pytest.approx(expected)


SPIN = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
sys.stdin.readline()
sum(i * i for i in range(3_000_000))
print("done", flush=True)
sys.stdin.readline()
child.kill()
"""


def test_the_meter_counts_a_services_tree_by_its_module() -> None:
    """A process named for the cache's module, and its child, are the cache; CPU counts from start."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SPIN, "-m", "modm.services.cache"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        meter = harness.StackMeter([proc.pid])
        meter.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        used, memory = meter.used(), meter.rss_mib()
        assert set(used) == {"cache", "bench"} and used["cache"] > 0
        assert set(memory) == {"cache", "total"} and memory["total"] == memory["cache"] > 10
        assert len(meter._processes()["cache"]) == 2  # the child is the cache's too
    finally:
        proc.stdin.write("stop\n")
        proc.stdin.close()
        proc.wait(30)
