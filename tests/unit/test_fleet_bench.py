"""`modm bench --emulate`: each mode's `modm up` flags, the closed loop, the report's runs list
(fleet fields, speedup and bound per fleet, a capped run flagged and not reported as a result),
and the flags refused before anything starts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from modm.bench import report
from modm.bench.records import MODES, RequestRecord, Run, RunInfo, StatsSample
from modm.bench.replay import ReplayOptions, replay
from modm.bench.stack import up_args
from modm.bench.traces import TraceRequest
from modm.cli.main import app
from modm.cli.up import Emulation

FLEET = Emulation("sd3.5-large-a100", "sdxl-a100", 0.1)
PAIR = "sd3.5-large-a100+sdxl-a100"


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_each_mode_starts_its_own_emulated_fleet() -> None:
    stacks = {mode: up_args(mode, workers=16, monitor=True, emulation=FLEET) for mode in MODES}
    for args in stacks.values():
        assert _flag(args, "--emulate") == "16" and _flag(args, "--time-scale") == "0.1" and "--workers" not in args
        assert (_flag(args, "--large-profile"), _flag(args, "--small-profile")) == ("sd3.5-large-a100", "sdxl-a100")
    assert "--monitor" in stacks["modm"] and "--large-slots" not in stacks["modm"]
    assert _flag(stacks["nirvana"], "--large-slots") == "16" and "--no-monitor" in stacks["nirvana"]
    assert _flag(stacks["large-only"], "--large-slots") == "16" and _flag(stacks["small-only"], "--large-slots") == "0"
    # Only the modes that read the cache start one; tiny stacks keep it (it shares their cores).
    assert [mode for mode, args in stacks.items() if "--no-cache" in args] == ["large-only", "small-only"]
    assert "--no-cache" not in up_args("large-only", workers=2, monitor=True)


class FakeClient:
    """Answers every request after yielding once; counts the requests in flight at once."""

    def __init__(self, *_: Any, **__: Any) -> None:
        self.in_flight = self.most = 0
        self.prompts: list[str] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def stats(self, **_: Any) -> dict[str, Any]:
        return {}

    async def generate(self, prompt: str, **_: Any) -> Any:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.prompts.append(prompt)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return SimpleNamespace(
            outcome="miss", pool="large", similarity=0.0, skipped_steps=0, total_steps=0, strength=1.0,
            steps_run=28, degraded=False, large_took_hit=False, attempts=1, timings={}, worker="w0",
        )  # fmt: skip


async def test_a_closed_loop_keeps_its_clients_busy_and_sends_each_request_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient()
    monkeypatch.setattr("modm.client.AsyncClient", lambda *a, **k: client)
    requests = [TraceRequest(float(i), f"prompt {i}") for i in range(23)]
    run = await replay("x:1", requests, None, ReplayOptions("modm", stats_interval_s=60, concurrency=5))
    assert client.most == 5 and sorted(client.prompts) == sorted(r.prompt for r in requests)
    assert [r.index for r in run.records] == list(range(23)) and all(r.worker == "w0" for r in run.records)
    assert all(r.scheduled_s == r.sent_s for r in run.records)  # no schedule: sent when a client was free
    with pytest.raises(ValueError, match="closed one"):
        await replay("x:1", requests, None, ReplayOptions("modm"))


def fleet_run(mode: str, gpus: int, call_s: float, *, cpu: dict[str, float], outcomes: list[str]) -> Run:
    """A closed loop on one worker per pool answering one request per `call_s`, back to back."""
    records = []
    for i, outcome in enumerate(outcomes):
        pool = {"miss": "large", "bypassed": "large", "hit": "small"}[outcome]
        records.append(
            RequestRecord(
                i, f"p{i}", "", 0.0, 0.0, (i + 1) * call_s, (i + 1) * call_s, outcome=outcome, pool=pool,
                skipped_steps=14 if outcome == "hit" else 0, total_steps=28 if outcome == "hit" else 0,
                steps_run=14 if outcome == "hit" else 28, worker=pool,
            )
        )  # fmt: skip
    records.append(RequestRecord(len(records), "last", "", 10.0, 10.0, 99.0, 89.0, outcome="miss", pool="large"))
    workers = [
        {"pool": "large", "address": "large", "profiled_seconds_per_step": 0.1},
        {"pool": "small", "address": "small", "profiled_seconds_per_step": 0.025},
    ]
    info = RunInfo(
        mode, "e", "t", len(records), {}, 0.0, 10.0, gpus=gpus, pair=PAIR, time_scale=0.1, concurrency=8,
        policy="slo-aware" if mode == "modm" else "static", capacity_rps=1.0, cpu_seconds=cpu,
    )  # fmt: skip
    return Run(info, records, [StatsSample(0.0, 0.0, 0.0, 0.0, {}, workers)])  # type: ignore[arg-type]


def test_the_runs_list_names_each_fleet_and_modms_speedup_against_its_bound() -> None:
    calm = {"router": 1.0, "cache": 2.0}
    runs = {
        "modm-16": fleet_run("modm", 16, 0.5, cpu=calm, outcomes=["miss", "hit"] * 10),
        "large-only-16": fleet_run("large-only", 16, 1.0, cpu=calm, outcomes=["bypassed"] * 10),
        "large-only-64": fleet_run("large-only", 64, 1.0, cpu=calm, outcomes=["bypassed"] * 10),
    }
    data = report.build(runs, slo_s=10.0)
    by_id = {s["id"]: s for s in data["runs"]}
    assert [s["id"] for s in data["runs"]] == ["modm-16", "large-only-16", "large-only-64"]
    for summary in data["runs"]:
        for key in ("gpus", "pair", "mode", "policy", "saturation_rps", "hit_rate", "kappa", "c", "time_scale"):
            assert key in summary, key
        assert summary["capped_by_machine"] is False and summary["c"] == pytest.approx(0.25)
    assert by_id["large-only-16"]["saturation_rps_wall"] == pytest.approx(1.0)
    assert by_id["large-only-16"]["saturation_rps"] == pytest.approx(0.1)  # the GPUs' own time
    modm = by_id["modm-16"]
    assert modm["saturation_rps_wall"] == pytest.approx(2.0) and modm["speedup"] == pytest.approx(2.0)
    h = 10 / 21  # ten hits of 21 requests (the last one a miss), each running half its steps; c = 1/4
    assert modm["bound"] == pytest.approx(1 / ((1 - h) + h * 0.5 * 0.25), abs=1e-3)
    assert [(c["gpus"], c["pair"], c["capped_by_machine"]) for c in data["comparisons"]] == [(16, PAIR, False)]
    assert "speedup" not in by_id["large-only-64"]


def test_a_run_the_machine_capped_is_flagged_and_not_reported_as_a_result() -> None:
    runs = {
        "modm": fleet_run("modm", 16, 0.5, cpu={"router": 1.0}, outcomes=["miss", "hit"] * 10),
        "large-only": fleet_run("large-only", 16, 1.0, cpu={"router": 1.0}, outcomes=["bypassed"] * 10),
    }
    runs["large-only"].info.capacity_rps = 1.25  # it served 80% of its GPUs' capacity
    runs["modm"].info.cpu_seconds = {"cache": 6.0}  # 60% of a core
    data = report.build(runs, slo_s=10.0)
    by_id = {s["id"]: s for s in data["runs"]}
    assert by_id["large-only"]["capped_by_machine"] and by_id["modm"]["capped_by_machine"]
    failures = by_id["modm"]["harness"]["failures"]
    assert failures[0].startswith("the cache used 60%") and "large-only run" in failures[1]
    text = report.markdown(data)
    assert text.count("| capped by the machine |") == 3  # both runs' saturation and modm's speedup
    assert "**capped by the machine**, not a result: large-only served 80%" in text
    assert data["comparisons"][0]["capped_by_machine"] and "**Capped by the machine**: these speedups" in text


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["up", "--time-scale", "0.5"], "--emulate N"),
        (["up", "--emulate", "4", "--workers", "2"], "drop --workers"),
        (["up", "--emulate", "4", "--large-profile", "no-such-gpu"], "not a shipped profile"),
        (["up", "--emulate", "4", "--config", "CONFIG"], "[small] names a device"),
        (["bench", "--emulate", "4", "--endpoint", "127.0.0.1:1", "--trace", "t.jsonl"], "starts its own"),
        (["bench", "--emulate", "4", "--eval", "--trace", "t.jsonl"], "flat colours"),
        (["bench", "--emulate", "4", "--small-profile", "./missing.toml", "--trace", "t.jsonl"], "missing.toml"),
    ],
)
def test_flags_that_do_not_fit_an_emulated_fleet_are_refused(tmp_path: Path, args: list[str], hint: str) -> None:
    config = tmp_path.parent / f"{tmp_path.name}.toml"
    config.write_text('[small]\ndevice = "cuda:1"\n')
    args = [str(config) if arg == "CONFIG" else arg for arg in args]
    extra = ["--data-dir", str(tmp_path)] if args[0] == "up" else ["--out", str(tmp_path)]
    done = CliRunner().invoke(app, [*args, *extra])
    said = " ".join(done.output.replace("│", " ").split())  # rich wraps the message in a box
    assert done.exit_code == 2 and hint in said, done.output
    assert not any(tmp_path.iterdir())  # refused before anything started


def test_a_warmup_is_left_out_and_the_measured_phase_reports_its_split_and_switches() -> None:
    runs = {
        "modm-16": fleet_run("modm", 16, 0.5, cpu={"router": 1.0}, outcomes=["miss", "hit"] * 10),
        "large-only-16": fleet_run("large-only", 16, 1.0, cpu={"router": 1.0}, outcomes=["bypassed"] * 10),
    }
    modm = runs["modm-16"]
    for record in modm.records[:4]:  # two misses and two hits before measuring
        record.warmup = True
    modm.info.measure_start_s, modm.info.settled = 2.0, True
    large, small = modm.samples[0].workers
    slot = dict(small, address="s1", healthy=True)
    modm.samples = [
        StatsSample(
            0.0,
            0.0,
            0.0,
            0.0,
            {"large": {"workers": 2}},
            [large, dict(slot, pool="large", profiled_seconds_per_step=0.1)],
        ),
        StatsSample(1.0, 0.0, 0.0, 0.0, {"large": {"workers": 1}, "small": {"workers": 1}}, [large, slot]),
        StatsSample(3.0, 0.0, 0.0, 0.0, {"large": {"workers": 1}, "small": {"workers": 1}}, [large, slot]),
    ]
    modm.info.load_average = [[1.0, 5.0], [3.0, 1.5]]  # the warm-up's load does not count
    modm.info.cores = 2
    summary = {s["id"]: s for s in report.build(runs, slo_s=10.0)["runs"]}["modm-16"]
    assert summary["requests"] == 17 and summary["outcomes"] == {"miss": 9, "hit": 8}
    assert summary["phases"] == {
        "warmup_requests": 4, "warmup_s": 2.0, "measured_s": 8.0, "settled": True,
        "switches_warmup": 1, "switches_measured": 0,
    }  # fmt: skip
    assert summary["allocation"]["small"] == {"min": 1, "max": 1, "mean": 1.0}  # the measured samples only
    assert summary["load_average"] == {"max": 1.5, "samples": 1, "cores": 2} and not summary["capped_by_machine"]
    # The work: 8 misses of 28 steps at 0.1 s/step (and the last, which ran none), 8 hits of 14
    # steps at 0.025 (no overhead).
    assert summary["work_split"] == {"large_share": pytest.approx(22.4 / 25.2, abs=1e-4), "large_gpus": 14.22}


def test_two_routers_compare_with_one_routers_large_only_and_show_what_they_gave_each_worker() -> None:
    runs = {
        "modm": fleet_run("modm", 64, 0.5, cpu={"router": 1.0}, outcomes=["miss", "hit"] * 10),
        "modm-2routers": fleet_run("modm", 64, 0.5, cpu={"router": 1.0}, outcomes=["miss", "hit"] * 10),
        "large-only": fleet_run("large-only", 64, 1.0, cpu={"router": 1.0}, outcomes=["bypassed"] * 10),
    }
    two = runs["modm-2routers"]
    two.info.routers = 2
    two.records[3].attempts = 2
    two.info.router_metrics = [{"retries": {"RESOURCE_EXHAUSTED": 1.0}}, {"retries": {}}]
    workers = [dict(w, capacity=4) for w in two.samples[0].workers]
    two.samples = [
        StatsSample(float(t), 0.0, 0.0, 0.0, {}, workers, fleet_in_flight={"large": 4 + t, "small": 3})
        for t in range(3)
    ]
    data = report.build(runs, slo_s=10.0)
    by_id = {s["id"]: s for s in data["runs"]}
    assert [s["id"] for s in data["runs"]] == ["modm", "modm-2routers", "large-only"]
    assert [c["routers"] for c in data["comparisons"]] == [1, 2]
    assert by_id["modm-2routers"]["speedup"] == by_id["modm"]["speedup"] == pytest.approx(2.0)
    dispatch = by_id["modm-2routers"]["dispatch"]
    assert dispatch["over_capacity_share"] == pytest.approx(2 / 6, abs=1e-4) and dispatch["most_over_capacity"] == 2
    assert dispatch["retried_requests"] == 1 and by_id["modm"]["dispatch"] is None
    text = report.markdown(data)
    assert "## Dispatch" in text and "{'RESOURCE_EXHAUSTED': 1.0}" in text and "(64 GPUs, " in text
    assert "routers)" in text  # the two-router comparison is named as such


def test_c_pools_runs_of_a_fleet_made_at_different_time_scales() -> None:
    """Workers report wall seconds: a large-only run at 0.1 and a modm run at 0.4 of the same
    profiles still give the profiles' c (0.25), not one skewed by the scales."""
    runs = {
        "modm": fleet_run("modm", 16, 0.5, cpu={}, outcomes=["miss", "hit"] * 10),
        "large-only": fleet_run("large-only", 16, 1.0, cpu={}, outcomes=["bypassed"] * 10),
    }
    for run, scale in ((runs["modm"], 0.4), (runs["large-only"], 0.1)):
        run.info.time_scale = scale
        for sample in run.samples:
            sample.workers = [
                dict(w, profiled_seconds_per_step=w["profiled_seconds_per_step"] * scale) for w in sample.workers
            ]
    data = report.build(runs, slo_s=10.0)
    assert {s["c"] for s in data["runs"]} == {0.25}
    assert report.gpu_time_samples(runs["large-only"])[0].workers[0]["profiled_seconds_per_step"] == pytest.approx(0.1)


def test_the_stack_config_carries_the_monitor_and_window_and_only_modm_gets_a_monitor(tmp_path: Path) -> None:
    import tomllib

    from modm.cli.bench import _up_config

    path = _up_config(tmp_path / "modm", "modm", "modm-b", {"window_s": 54.0, "interval_s": 9.0}, metrics=True)
    assert path is not None
    config = tomllib.loads(path.read_text())
    assert config["monitor"] == {"policy": "modm-b", "interval_s": 9.0} and config["router"]["window_s"] == 54.0
    assert config["router"]["metrics_port"] > 0
    nirvana = _up_config(tmp_path / "nirvana", "nirvana", "modm-b", {"window_s": 54.0}, metrics=False)
    assert nirvana is not None and tomllib.loads(nirvana.read_text()) == {"router": {"window_s": 54.0}}
    assert _up_config(tmp_path / "none", "large-only", None, {}, metrics=False) is None


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--routers", "2", "--endpoint", "127.0.0.1:1"], "--start or --emulate"),
        (["--emulate", "4", "--routers", "2", "--mode", "small-only"], "its own router"),
        (["--settle", "30"], "closed loop"),
    ],
)
def test_routers_and_phases_need_what_they_build_on(tmp_path: Path, args: list[str], hint: str) -> None:
    done = CliRunner().invoke(app, ["bench", "--trace", "t.jsonl", "--out", str(tmp_path), *args])
    said = " ".join(done.output.replace("│", " ").split())
    assert done.exit_code == 2 and hint in said, done.output
