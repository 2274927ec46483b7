"""`modm bench` and `modm eval` end to end on a tiny stack: three modes, a few requests each.

Checks what each mode asks of the router (large-only: cache off, large pool; small-only: the
small pool's text-to-image through a second router), that the cache saves work (hits happen and
modm runs fewer large-model steps than large-only on the same trace) and that the report is
complete. Timings are the benchmark's business, not the test's: on a shared machine they say
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modm.bench.records import Run
from modm.bench.report import PLOTS
from modm.bench.traces import TraceRequest, write_trace
from modm.cli.main import app
from modm.launch import ServiceProcess
from tests.procs import start_cache, start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPTS = [
    "a photo of a red sports car parked on a city street at night",
    "a red sports car on a street in the city, night photo",
    "a photo of a red sports car parked on a city street at night",
    "an old castle under a starry sky, oil painting",
]


@pytest.fixture(scope="module")
def router(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("bench-stack")
    procs = [
        start_cache(root / "cache", root, log_format="text"),
        start_worker(tiny_model("sd3"), root, role="large", log_format="text"),
        start_worker(tiny_model("sdxl"), root, role="small", log_format="text"),
    ]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        procs.append(start_router(root, procs[1].address, procs[2].address, procs[0].address))
        procs[-1].wait_serving()
        yield procs[-1]
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_bench_three_modes_with_eval_then_modm_eval(router: ServiceProcess, tmp_path: Path) -> None:
    trace = write_trace(
        [TraceRequest(3.0 * i, p, params={"steps": 2, "seed": i}) for i, p in enumerate(PROMPTS)], tmp_path / "t.jsonl"
    )
    out = tmp_path / "out"
    args = ["bench", "--trace", str(trace), "--out", str(out), "--endpoint", router.address, "--time-scale", "0.5"]
    args += ["--mode", "modm", "--mode", "large-only", "--mode", "small-only", "--eval", "--clip-model", "tiny"]
    args += ["--stats-interval", "1", "--warmup", "1"]  # PROMPTS[0] cached before the measured three
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "meaningless" in done.output

    measured = PROMPTS[1:]
    runs = {mode: Run.load(out / "runs" / mode) for mode in ("modm", "large-only", "small-only")}
    for mode, run in runs.items():
        assert [r.error for r in run.records] == [""] * len(measured), mode
        assert all(r.image and (out / "runs" / mode / "images" / r.image).exists() for r in run.records)
        assert all(r.clip_score is not None for r in run.records)
        assert run.samples, "the router's Stats was sampled"
    # The paraphrase may or may not reuse; PROMPTS[0] again with another seed does, the castle cannot.
    assert [r.outcome for r in runs["modm"].records][1:] == ["hit", "miss"]
    assert runs["modm"].records[0].outcome in {"hit", "miss"}
    assert {(r.outcome, r.pool) for r in runs["large-only"].records} == {("bypassed", "large")}
    assert {(r.pool, r.degraded) for r in runs["small-only"].records} == {("small", True)}

    data = json.loads((out / "report.json").read_text())
    summaries = {s["id"]: s for s in data["runs"]}
    assert set(summaries) == {"modm", "large-only", "small-only"}
    steps = {mode: summaries[mode]["steps_by_pool"] for mode in runs}
    assert steps["large-only"] == {"large": 2 * len(measured)}
    assert steps["modm"].get("large", 0) < steps["large-only"]["large"]
    assert data["comparisons"][0]["bound"]["cost_ratio"] > 0
    assert "fid_modm_vs_large_only" in data["quality"]
    assert "clip_score_by_outcome" in summaries["modm"]
    assert all((out / name).exists() for name in ("report.md", *PLOTS))

    images = out / "runs" / "modm" / "images"
    clip = CliRunner().invoke(app, ["eval", "clip", str(images), "--clip-model", "tiny"])
    assert clip.exit_code == 0 and f"over {len(measured)} images" in clip.output, clip.output
    fid = CliRunner().invoke(
        app, ["eval", "fid", str(out / "runs" / "large-only" / "images"), str(images), "--clip-model", "tiny"]
    )
    assert fid.exit_code == 0 and "FD-CLIP" in fid.output, fid.output


def test_warmup_requests_fill_the_cache_and_are_not_measured(router: ServiceProcess, tmp_path: Path) -> None:
    prompt = "a glass lighthouse on a frozen lake, watercolor"  # not among PROMPTS: new to the shared cache
    trace = write_trace(
        [TraceRequest(float(i), prompt, params={"steps": 2, "seed": 7}) for i in range(2)], tmp_path / "t.jsonl"
    )
    out = tmp_path / "out"
    args = ["bench", "--trace", str(trace), "--out", str(out), "--endpoint", router.address, "--warmup", "1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    run = Run.load(out / "runs" / "modm")
    assert run.info.requests == 1 and run.info.timing["warmup_requests"] == 1
    assert [r.outcome for r in run.records] == ["exact_repeat"]  # the warm-up's image was cached
    refused = CliRunner().invoke(app, [*args[:-1], "2"])
    assert refused.exit_code != 0 and "leave none" in refused.output
