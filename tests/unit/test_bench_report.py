"""The report: summary numbers, speedups against the bound, and every file written and readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modm.bench import report
from modm.bench.records import RequestRecord, Run, RunInfo, StatsSample


def make_run(mode: str, outcomes: list[tuple[str, int, float]], queue: float = 0.0) -> Run:
    """Requests one second apart; each (outcome, k, latency)."""
    records = []
    for i, (outcome, k, latency) in enumerate(outcomes):
        pool = {"miss": "large", "bypassed": "large", "hit": "small", "exact_repeat": "cache"}.get(outcome, "")
        records.append(
            RequestRecord(
                i,
                f"prompt {i}",
                "",
                float(i),
                float(i),
                i + latency,
                latency,
                outcome=outcome,
                pool=pool,
                skipped_steps=k,
                total_steps=50 if outcome in ("hit", "exact_repeat") else 0,
                steps_run={"miss": 50, "bypassed": 50, "hit": 50 - k}.get(outcome, 0),
                timings={"total_seconds": latency, "queue_seconds": queue},
                error="" if outcome else "RESOURCE_EXHAUSTED",
            )
        )
    workers = [
        {"pool": "large", "address": "a", "profiled_seconds_per_step": 0.1},
        {"pool": "small", "address": "b", "profiled_seconds_per_step": 0.02},
    ]
    pools = {"large": {"workers": 1, "queue_depth": 2, "in_flight": 1, "capacity": 4}}
    samples = [StatsSample(float(t), 0.5, 0.4, 10.0, pools, workers) for t in range(0, 10, 5)]
    info = RunInfo(mode, "127.0.0.1:1", "trace.jsonl", len(records), {"shape": "poisson"}, 0.0, 10.0)  # type: ignore[arg-type]
    return Run(info, records, samples)


def runs() -> dict[str, Run]:
    modm = make_run("modm", [("miss", 0, 4.0), ("hit", 25, 1.0), ("hit", 15, 1.0), ("exact_repeat", 50, 0.1)])
    large = make_run(
        "large-only", [("bypassed", 0, 4.0), ("bypassed", 0, 8.0), ("bypassed", 0, 12.0), ("", 0, 0.5)], 2.0
    )
    return {"modm": modm, "large-only": large}


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (report.percentile(values, 50), report.percentile(values, 99), report.percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert report.percentile([3.0], 99) == 3.0


def test_summary_numbers() -> None:
    summary = report.summarize(runs()["modm"], slo_s=2.0)
    assert summary["completed"] == 4 and summary["errors"] == {}
    assert summary["duration_s"] == pytest.approx(4.0)  # first send at 0, last reply (the miss) at 4
    assert summary["throughput_rps"] == pytest.approx(1.0)
    assert summary["latency_s"]["mean"] == pytest.approx(6.1 / 4)
    assert summary["slo_violation_share"] == 0.25
    assert summary["hit_rate"] == 0.75
    assert summary["k_distribution"] == {"15": 0.5, "25": 0.5}
    assert summary["steps_by_pool"] == {"large": 50, "small": 25 + 35, "cache": 0}
    assert summary["cost_ratio_c"] == pytest.approx(0.2)
    baseline = report.summarize(runs()["large-only"], slo_s=2.0)
    assert baseline["errors"] == {"RESOURCE_EXHAUSTED": 1}
    assert baseline["slo_violation_share"] == 1.0  # an error counts as over the SLO
    assert baseline["service_s"]["mean"] == pytest.approx((2 + 6 + 10) / 3)


def test_speedups_and_bound() -> None:
    data = report.build(runs(), slo_s=2.0)
    comparison = data["comparisons"][0]
    assert comparison["speedup_mean_latency"] == pytest.approx(8.0 / (6.1 / 4), rel=1e-3)
    bound = comparison["bound"]
    assert (bound["hit_rate"], bound["img2img_rate"], bound["cost_ratio"]) == pytest.approx((0.75, 0.5, 0.2))
    kappa = (0.5 + 0.7) / 2  # the two hits; the exact repeat is not one
    assert bound["kappa"] == pytest.approx(kappa, abs=1e-4)
    assert bound["speedup"] == pytest.approx(1 / (0.25 + 0.5 * kappa * 0.2), abs=1e-3)
    assert comparison["speedup_mean_latency_over_bound"] == pytest.approx(
        comparison["speedup_mean_latency"] / bound["speedup"], abs=1e-3
    )
    assert bound["cost_ratio_source"] == "profiled"
    assert report.build({"modm": runs()["modm"]}, slo_s=2.0)["comparisons"] == []


def test_runs_on_different_time_scales_compare_only_in_the_gpus_time() -> None:
    both = runs()
    both["large-only"].info.time_scale = 0.5  # a faster fleet's wall seconds are not modm's
    comparison = report.build(both, slo_s=2.0)["comparisons"][0]
    assert not {"speedup_mean_latency", "speedup_mean_service", "speedup_throughput"} & comparison.keys()
    assert "bound" in comparison


def test_served_seconds_per_step_stand_in_for_unusable_profiles() -> None:
    both = runs()
    for run in both.values():
        for sample in run.samples:
            sample.workers = [
                {"pool": "large", "profiled_seconds_per_step": 1e-6, "mean_seconds_per_step": 0.5},
                {"pool": "small", "profiled_seconds_per_step": 0.3, "mean_seconds_per_step": 0.05},
            ]
    bound = report.build(both, slo_s=2.0)["comparisons"][0]["bound"]
    assert (bound["cost_ratio"], bound["cost_ratio_source"]) == (0.1, "served")


def test_every_file_is_written_and_parses(tmp_path: Path) -> None:
    data = report.build(runs(), slo_s=2.0, trace="trace.jsonl")
    written = report.write(tmp_path, runs(), data)
    assert {p.name for p in written} == {"report.json", "report.md", *report.PLOTS}
    assert json.loads((tmp_path / "report.json").read_text())["comparisons"][0]["bound"]["speedup"] > 1
    text = (tmp_path / "report.md").read_text()
    assert "speedup mean latency" in text and "| modm |" in text and "| large-only |" in text
    for name in report.PLOTS:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_runs_round_trip_through_their_folder(tmp_path: Path) -> None:
    run = runs()["modm"]
    run.save(tmp_path / "modm")
    again = Run.load(tmp_path / "modm")
    assert again.records == run.records and again.samples == run.samples and again.info == run.info


def test_rolling_hit_rate() -> None:
    points = report.rolling_hit_rate(runs()["modm"].records, window=2)
    assert points == [(2.0, 1.0), (3.0, 1.0), (3.1, 1.0), (4.0, 0.5)]  # in reply order: the miss ends last
