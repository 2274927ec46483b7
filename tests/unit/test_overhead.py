"""benchmarks/overhead.py's arithmetic on synthetic records: the router and cache's time per
request, the device times and the fleet's rate from the profiles, the closed loop's window, when
a sweep stops, the stage histograms' deltas, the load average's flag, and the report."""

from __future__ import annotations

import argparse
import io

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from benchmarks import overhead
from modm.bench.records import RequestRecord
from modm.services.worker.device_profile import load_profile

FLEET = overhead.Fleet(load_profile("sd3.5-large-a100"), load_profile("sdxl-a100"), gpus=64)
MISS_S = 0.1543 + 28 * 0.4429218  # the large profile's 28 steps
HIT_K25_S = 0.122 + 15 * 0.11956  # SDXL img2img at strength 0.5: 15 of its 30 steps


def served(
    outcome: str,
    *,
    total: float = 0.05,
    queue: float = 0.0,
    generate: float = 0.0,
    k: int = 0,
    done: float = 1.0,
    error: str = "",
) -> RequestRecord:
    timings = {
        "lookup_seconds": 0.01,
        "embed_seconds": 0.006,
        "search_seconds": 0.004,
        "fetch_seconds": 0.003 if outcome in ("hit", "exact_repeat") else 0.0,
        "queue_seconds": queue,
        "generate_seconds": generate,
        "total_seconds": total,
    }
    return RequestRecord(
        0, "p", "", 0.0, done - total, done, total, outcome=outcome, skipped_steps=k, total_steps=50 if k else 0,
        timings=timings, error=error,
    )  # fmt: skip


def test_the_system_time_is_the_routers_total_without_the_queue_and_the_worker_call() -> None:
    assert overhead.system_seconds(served("hit", total=2.5, queue=0.4, generate=2.0, k=25)) == pytest.approx(0.1)
    assert overhead.system_seconds(served("exact_repeat", total=0.02)) == pytest.approx(0.02)


def test_spreads_are_nearest_rank_in_milliseconds() -> None:
    spread = overhead.spread_ms([i / 1000 for i in range(1, 101)])
    assert spread == {"n": 100, "mean": 50.5, "p50": 50.0, "p99": 99.0}
    assert overhead.spread_ms([]) == {}


def test_device_times_come_from_the_profiles() -> None:
    assert FLEET.miss_seconds() == pytest.approx(MISS_S)
    assert FLEET.hit_steps(25, 50) == 15
    assert FLEET.hit_seconds(25, 50) == pytest.approx(HIT_K25_S)
    assert FLEET.device_seconds(served("exact_repeat")) == 0.0
    assert FLEET.large_only_rate() == pytest.approx(64 / MISS_S)


def test_the_fleets_rate_is_its_gpus_over_the_mixes_mean_device_time() -> None:
    mix = [served("miss"), served("hit", k=25), served("exact_repeat"), served("miss", error="UNAVAILABLE")]
    assert FLEET.rate(mix) == pytest.approx(64 / ((MISS_S + HIT_K25_S) / 3))
    with pytest.raises(ValueError, match="no fleet rate"):
        FLEET.rate([served("exact_repeat")])


def test_the_median_k_is_a_k_the_table_gives() -> None:
    hits = [served("hit", k=k) for k in (5, 25, 30, 15)]
    assert overhead.median_k([*hits, served("miss")]) == (15, 50)
    assert overhead.median_k([served("miss")]) is None


def test_the_overhead_summary_splits_outcomes_and_stages_and_sets_them_against_the_device() -> None:
    records = [
        served("miss", total=0.02, generate=0.001),
        served("hit", total=0.04, generate=0.01, k=25),
        served("exact_repeat", total=0.01),
        served("miss", error="RESOURCE_EXHAUSTED"),
    ]
    shared = served("exact_repeat", total=0.01)  # answered from an identical request's flight: no fetch
    shared.timings["fetch_seconds"] = 0.0
    records.append(shared)
    summary = overhead.overhead_summary(records, FLEET)
    assert (summary["requests"], summary["errors"]) == (5, 1)
    assert summary["outcomes"] == {"miss": 1, "hit": 1, "exact_repeat": 2}
    assert summary["system_ms"]["p50"] == pytest.approx(10.0)
    assert summary["system_ms_by_outcome"]["hit"]["p50"] == pytest.approx(30.0)
    assert summary["stages_ms"]["embed"]["n"] == 2  # an exact repeat embeds nothing
    assert summary["stages_ms"]["fetch"]["n"] == 2  # neither a miss nor a shared flight fetches
    assert summary["device"] == {
        "miss_s": round(MISS_S, 4),
        "median_k": 25,
        "total_steps": 50,
        "hit_steps": 15,
        "hit_s": round(HIT_K25_S, 4),
    }
    assert summary["system_over_device"]["p50_over_hit"] == pytest.approx(0.010 / HIT_K25_S, rel=1e-3)


def test_a_level_counts_what_was_answered_in_its_window_and_the_cpu_per_request() -> None:
    records = [served("exact_repeat", done=t) for t in (0.5, 1.2, 2.0, 2.9, 3.5)]
    records.append(served("exact_repeat", done=2.5, error="DEADLINE_EXCEEDED"))
    level = overhead.level_summary(records, 4, (1.0, 3.0), {"router": 0.3, "cache": 0.6})
    assert (level["answered"], level["errors"], level["throughput_rps"]) == (3, {"DEADLINE_EXCEEDED": 1}, 1.5)
    assert level["cpu_ms_per_request"] == {"router": 100.0, "cache": 200.0}
    assert level["cpu_share_of_one_core"] == {"router": 0.15, "cache": 0.3}
    assert level["one_core_rps"] == {"router": 10.0, "cache": 5.0}


def test_a_sweep_goes_on_while_throughput_grows_by_five_percent() -> None:
    assert overhead.keep_sweeping([10.0])
    assert overhead.keep_sweeping([10.0, 10.5])
    assert not overhead.keep_sweeping([10.0, 10.4])
    assert not overhead.keep_sweeping([10.0, 20.0, 20.5])


def test_saturation_is_the_best_level_and_its_busiest_process() -> None:
    levels = [
        {"concurrency": 1, "throughput_rps": 40.0, "cpu_share_of_one_core": {"router": 0.2, "cache": 0.5}},
        {"concurrency": 4, "throughput_rps": 60.0, "cpu_share_of_one_core": {"router": 0.3, "cache": 0.9}},
        {"concurrency": 8, "throughput_rps": 59.0, "cpu_share_of_one_core": {"router": 0.3, "cache": 0.95}},
    ]
    assert overhead.saturation(levels) == {
        "max_rps": 60.0,
        "at_concurrency": 4,
        "busiest_process": "cache",
        "busiest_share_of_one_core": 0.9,
        "cores_used": 1.2,
    }


def test_the_cache_is_split_into_its_process_and_its_helpers_and_the_meter_is_the_client() -> None:
    cpu = overhead.split_cache({"router": 1.0, "cache": 3.0, "bench": 0.5}, {"weed": 1.25})
    assert cpu == {"router": 1.0, "cache": 1.75, "client": 0.5, "cache/weed": 1.25}


def test_stage_histograms_give_what_each_stage_observed_between_two_reads() -> None:
    registry = CollectorRegistry()
    stages = Histogram(
        overhead.STAGE_METRIC, "stages", ["stage"], buckets=(0.001, 0.005, 0.01, 0.05), registry=registry
    )
    stages.labels("lookup").observe(0.5)  # before the first read: not counted
    before = overhead.stage_histograms(generate_latest(registry).decode())
    for seconds in (0.002, 0.003, 0.004, 0.02):
        stages.labels("lookup").observe(seconds)
    stages.labels("fetch").observe(0.2)  # beyond the last bound
    delta = overhead.histogram_delta(before, overhead.stage_histograms(generate_latest(registry).decode()))
    assert delta["lookup"] == {"count": 4, "mean_ms": 7.25, "p50_at_most_ms": 5.0, "p99_at_most_ms": 50.0}
    assert delta["fetch"]["p99_at_most_ms"] is None


def test_the_load_average_is_flagged_over_three() -> None:
    assert overhead.read_loadavg("2.50 1.00 0.50 1/100 42\n") == {"1m": 2.5, "5m": 1.0, "15m": 0.5, "over_flag": False}
    assert overhead.read_loadavg("3.01 1.00 0.50 1/100 42\n")["over_flag"]


def test_seeded_images_are_deterministic_and_weigh_like_a_real_1024_image() -> None:
    data = overhead.photo_like_png(3)
    assert data == overhead.photo_like_png(3) != overhead.photo_like_png(4)
    assert 1.2e6 < len(data) < 2.2e6
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_levels_and_sweeps_are_checked() -> None:
    assert overhead.parse_levels("1,2,8") == [1, 2, 8]
    assert overhead.parse_sweeps("hits,exact_png") == ["hits", "exact_png"]
    for bad in ("4,2", "0,1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            overhead.parse_levels(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        overhead.parse_sweeps("misses")


def test_the_markdown_gives_the_numbers_and_flags_a_shared_machine() -> None:
    records = [served("miss", total=0.02, generate=0.001), served("hit", total=0.04, generate=0.01, k=25)]
    calm, busy = overhead.read_loadavg("0.5 0.5 0.5 1/1 1"), overhead.read_loadavg("4.2 3 2 1/1 1")
    level = overhead.level_summary(records, 1, (0.0, 2.0), {"router": 0.1}) | {
        "loadavg": {"before": calm, "after": busy}
    }
    report = {
        "command": ".venv/bin/python benchmarks/overhead.py",
        "wall_s": 500.0,
        "machine": {"cores": 2, "cpu": "a CPU"},
        "setup": {
            "gpus": 64,
            "large_profile": "sd3.5-large-a100",
            "small_profile": "sdxl-a100",
            "seeded_entries": 500,
            "omp_threads": 1,
            "image": {"side": 1024, "mean_bytes": 1_600_000},
        },
        "overhead_at_fleet_rate": {
            "rate_rps": 12.9,
            "large_only_rps": 5.1,
            "calibration": {"requests": 300},
            "summary": overhead.overhead_summary(records, FLEET),
            "stage_histograms": {},
            "cpu_ms_per_request": {"router": 5.0},
            "loadavg": {"before": calm, "after": calm},
        },
        "saturation": {"hits": {"title": "Hits", "levels": [level], "saturation": overhead.saturation([level])}},
    }
    text = overhead.markdown(report)
    assert "Rate 12.90 req/s" in text and "hit at the median k = 25 of 50: 1.92 s" in text
    assert "over the hit's device time: 0.99% / 1.57%" in text
    assert "0.50 -> 4.20 **(over 3: shared machine)**" in text
    assert "Most: **1.0 req/s** at C = 1; busiest process: router" in text
