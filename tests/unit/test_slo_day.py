"""benchmarks/slo_day.py: the day's arithmetic, the stacks' settings, and what a run's records,
Stats samples and monitor log are reduced to (hours, load bands, switches, the harness check)."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from modm.bench.records import RequestRecord, Run, RunInfo, StatsSample
from modm.cli.up import plan_monitor
from tests.tools import ROOT
from tests.unit.test_bench_trace_builder import session_fixture


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slo_day", ROOT / "benchmarks" / "slo_day.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["slo_day"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


slo_day = _load()
SETUP = slo_day.Setup()  # 16 GPUs, time scale 0.5, 12 trace hours in 540 wall s
IMAGE_S = 0.1543 + 28 * 0.4429218  # sd3.5-large-a100 at its default 28 steps, one image


def record(
    at: float, latency: float, *, error: str = "", done: float | None = None, lookup: float | None = None
) -> RequestRecord:
    done = at + latency if done is None else done
    timings = {} if lookup is None else {"lookup_seconds": lookup}
    return RequestRecord(0, "p", "fresh", at, at, done, latency, outcome="miss", timings=timings, error=error)


def sample(at: float, queued: int, large: int = 16, small: int = 0) -> StatsSample:
    pools = {"large": {"workers": large, "queue_depth": queued}, "small": {"workers": small, "queue_depth": 0}}
    return StatsSample(at, 0.0, 0.0, 0.0, pools, [])


def test_the_day_is_priced_in_large_images_and_compressed_by_its_window() -> None:
    assert SETUP.image_fleet_s == pytest.approx(IMAGE_S)
    assert SETUP.slo_fleet_s == pytest.approx(3 * IMAGE_S)
    assert SETUP.slo_s == pytest.approx(1.5 * IMAGE_S)  # wall seconds at time scale 0.5
    assert SETUP.capacity_rps == pytest.approx(16 / (0.5 * IMAGE_S))
    assert SETUP.rate_rps == pytest.approx(0.6 * SETUP.capacity_rps)
    assert (SETUP.hours, SETUP.hour_s) == (12, 45.0)
    assert SETUP.compression == pytest.approx(12 * 3600 / 1080)  # trace seconds per fleet second


def test_the_day_is_the_windows_sessions_at_the_setups_rate_at_the_models_own_steps(tmp_path: Path) -> None:
    session_fixture(tmp_path)  # a day of 30 users' sessions of 4 requests, each asking 30 steps
    setup = slo_day.Setup(gpus=4, day_s=60.0, load=0.5, start_day=0.0, days=1.0)
    requests, meta = slo_day.build_day(tmp_path, setup)
    assert meta["compression"] == 1440.0  # a day into a minute
    assert len(requests) == pytest.approx(setup.rate_rps * 60.0, abs=4)  # whole sessions
    assert requests and all(r.params == {} for r in requests)  # the trace's steps dropped


def test_each_policy_gets_its_monitor_and_every_stack_the_same_serving_settings() -> None:
    for policy in ("slo-aware", "modm-a", "modm-b"):
        table = tomllib.loads(slo_day.stack_config(policy, SETUP))
        assert table["large"] == {"max_batch_size": 1}
        assert table["router"]["max_queue"] == slo_day.MAX_QUEUE
        settings = plan_monitor(table, router_port=1, workers=16, time_scale=SETUP.time_scale)
        assert settings.policy == policy
        assert settings.slo_seconds == pytest.approx(SETUP.slo_s, abs=1e-3)  # as given, not scaled again
        assert settings.interval_s == pytest.approx(7.5)  # the monitor's other times are scaled
    assert "monitor" not in tomllib.loads(slo_day.stack_config("large-only", SETUP))


def test_up_flags_monitor_the_policies_and_run_large_only_bare(tmp_path: Path) -> None:
    config = tmp_path / "stack.toml"
    watched = slo_day.up_flags("modm-b", SETUP, config)
    assert "--monitor" in watched and "--no-cache" not in watched
    assert watched[watched.index("--emulate") + 1] == "16"
    assert watched[watched.index("--time-scale") + 1] == "0.5"
    assert watched[-4:] == ["--config", str(config), "--log-format", "json"]
    bare = slo_day.up_flags("large-only", SETUP, config)
    assert {"--no-monitor", "--no-cache"} <= set(bare)
    assert bare[bare.index("--large-slots") + 1] == "16"


def test_slot_switches_are_read_from_the_monitors_json_log() -> None:
    lines = [
        json.dumps({"ts": "2026-01-01T00:00:10.500Z", "msg": "decision", "target": "9 large + 7 small"}),
        json.dumps({"ts": "2026-01-01T00:00:11.250Z", "msg": "switching slot", "slot": "slot15", "to": "large"}),
        "not json",
        "[1, 2]",
        json.dumps({"ts": "2026-01-01T00:01:00.000Z", "msg": "switching slot", "slot": "slot14", "to": "small"}),
    ]
    started = 1767225600.0  # 2026-01-01T00:00:00Z
    found = slo_day.slot_switches(lines, started)
    assert found == [slo_day.SlotSwitch(11.25, "slot15", "large"), slo_day.SlotSwitch(60.0, "slot14", "small")]


def test_hours_count_arrivals_load_and_the_share_within_the_slo() -> None:
    slo, hour = SETUP.slo_s, SETUP.hour_s
    records = [
        record(1.0, slo / 2, lookup=0.1),
        record(2.0, slo + 1, lookup=0.3),  # late
        record(3.0, 0.1, error="UNAVAILABLE"),  # an error counts as over
        record(hour + 1, slo),  # exactly the SLO is within
        record(SETUP.day_s + 5, 1.0),  # after the window's end: the last hour
    ]
    rows = slo_day.hourly(records, SETUP)
    assert len(rows) == 12
    assert rows[0]["requests"] == 3 and rows[0]["within_slo"] == pytest.approx(1 / 3, abs=1e-4)
    assert rows[0]["load"] == pytest.approx(3 / hour / SETUP.capacity_rps, abs=1e-3)
    assert rows[0]["lookup_s"] == pytest.approx(0.4)  # fleet seconds: wall / time scale
    assert rows[1]["within_slo"] == 1.0 and rows[1]["lookup_s"] is None
    assert rows[2] == {"hour": 2, "requests": 0, "load": 0.0, "within_slo": None, "lookup_s": None}
    assert rows[11]["requests"] == 1


def test_hours_group_into_load_bands_weighted_by_requests() -> None:
    assert [slo_day.band_of(x) for x in (0.2, 0.5, 0.99, 1.2, 1.5, 3.0)] == [
        "0-0.5",
        "0.5-1",
        "0.5-1",
        "1-1.5",
        ">=1.5",
        ">=1.5",
    ]
    hours = [
        {"hour": 0, "requests": 10, "load": 0.7, "within_slo": 1.0},
        {"hour": 1, "requests": 30, "load": 0.9, "within_slo": 0.5},
        {"hour": 2, "requests": 0, "load": 0.0, "within_slo": None},
        {"hour": 3, "requests": 20, "load": 2.0, "within_slo": 0.25},
    ]
    assert slo_day.by_band(hours) == {
        "0.5-1": {"hours": 2, "requests": 40, "within_slo": 0.625},
        ">=1.5": {"hours": 1, "requests": 20, "within_slo": 0.25},
    }


def test_capacity_is_read_while_the_large_queue_never_emptied() -> None:
    samples = [sample(0, 0), sample(2, 3), sample(4, 5), sample(6, 4), sample(8, 0), sample(10, 2), sample(11, 0)]
    done = [record(0, 1, done=t) for t in (1.0, 2.5, 3.0, 4.0, 5.5, 6.0, 7.0, 10.5)]
    # The span 2..6 holds the answers at 2.5, 3, 4, 5.5 and 6; the one at 10.5 is in a span too short.
    assert slo_day.backlogged_rps(done, samples, min_span_s=3.0) == pytest.approx(5 / 4)
    assert slo_day.backlogged_rps(done, samples, min_span_s=5.0) is None
    still = [sample(0, 1), sample(4, 1)]  # a queue to the end of the run closes its span
    assert slo_day.backlogged_rps([record(0, 1, done=3.0)], still, min_span_s=4.0) == pytest.approx(1 / 4)


def _run(policy: str, records: list[RequestRecord], samples: list[StatsSample], *, cache_s: float = 10.0) -> Run:
    info = RunInfo("modm", "e", "t", len(records), {}, 0.0, 100.0, policy=policy)
    info.cpu_seconds = {"router": 10.0, "cache": cache_s}
    info.load_average, info.cores = [[0.0, 1.0], [5.0, 2.5]], 2
    return Run(info, records, samples)


def test_a_summary_counts_switches_in_the_replay_and_takes_the_harness_check() -> None:
    records = [record(1.0, 1.0, lookup=0.05), record(50.0, SETUP.slo_s * 2, lookup=0.1)]
    extras = {"switches": [{"at": -1.0, "slot": "s", "to": "large"}, {"at": 45.0, "slot": "s", "to": "small"}]}
    summary = slo_day.summarize(_run("modm-a", records, [sample(0, 0, 9, 7), sample(45, 0, 8, 8)]), extras, SETUP)
    assert summary["switches"] == 1 and summary["switch_hours"] == [1.0]
    assert summary["within_slo"] == 0.5
    assert summary["p50_s"] == pytest.approx(2.0)  # fleet seconds: wall / time scale
    assert summary["pools"] == [(0.0, 9, 7), (1.0, 8, 8)]
    assert summary["peak_lookup_s"] == pytest.approx(0.2)
    assert not summary["harness"]["capped_by_machine"]
    assert summary["harness"]["max_load_average"] == 2.5
    assert summary["harness"]["capacity_ratio"] is None  # modm: no capacity check
    busy = slo_day.summarize(_run("modm-a", records, [], cache_s=60.0), extras, SETUP)
    assert busy["harness"]["failures"] == ["the cache used 60% of a core (limit 50%)"]


def _result(switches: int, hours: list[float | None], requests: int = 20) -> dict:
    rows = [
        {"hour": i, "requests": 0 if x is None else requests, "load": 1.0 + i, "within_slo": x}
        for i, x in enumerate(hours)
    ]
    return {"switches": switches, "hours": rows, "bands": slo_day.by_band(rows)}


def test_the_goal_is_every_hour_and_band_at_or_above_both_references_with_half_the_switches() -> None:
    references = {"modm-a": _result(10, [0.9, 1.0, None]), "modm-b": _result(12, [1.0, 0.8, None])}
    met = slo_day.verdict({"slo-aware": _result(5, [1.0, 1.0, None]), **references})
    assert met is not None and met["met"] and met["fewest_reference_switches"] == 10
    behind = slo_day.verdict({"slo-aware": _result(6, [0.95, 1.0, None]), **references})
    assert behind is not None and not behind["met"]
    assert behind["hours_behind"] == [0] and behind["bands_behind"] == ["1-1.5"]
    assert not behind["half_the_switches"]
    assert slo_day.verdict({"slo-aware": _result(1, [1.0])}) is None
    # An hour of a few requests is shown, not judged: one request decides it.
    few = {"modm-a": _result(10, [1.0, 1.0], requests=3), "modm-b": _result(10, [1.0, 1.0], requests=3)}
    quiet = slo_day.verdict({"slo-aware": _result(5, [0.0, 1.0], requests=3), **few})
    assert quiet is not None and quiet["met"]


def test_the_command_line_never_names_the_data_folder() -> None:
    line = slo_day.command_line(["--data", "/somewhere/prompts", "--out", "x"])
    assert line == "benchmarks/slo_day.py --data $DATA --out x"
    assert slo_day.command_line(["--data=/somewhere"]) == "benchmarks/slo_day.py --data=$DATA"


def test_the_report_names_flagged_runs_and_the_goal() -> None:
    results = {
        name: slo_day.summarize(_run(name, [record(1.0, 1.0)], [sample(0, 0)], cache_s=60.0), {"switches": []}, SETUP)
        for name in slo_day.POLICIES
    }
    meta = {"compression": 80.0, "requests": 1, "kinds": {"fresh": 1.0}}
    report = slo_day.build_report(SETUP, meta, results, "benchmarks/slo_day.py --data $DATA")
    assert report["flagged"] == list(slo_day.POLICIES)  # the cache's 60% of a core
    text = slo_day.markdown(report)
    assert "**Flagged**" in text and "Goal (slo-aware at or above modm-a and modm-b" in text
    assert text.count("\n| 0 | ") == 1  # one row per hour
