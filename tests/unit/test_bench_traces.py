"""Traces: the seeded generator's structure, file round trips, the DiffusionDB importer."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from modm.bench.traces import (
    TraceKnobs,
    TraceRequest,
    generate_trace,
    import_diffusiondb,
    read_trace,
    read_trace_meta,
    trace_shares,
    write_trace,
)

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    knobs = TraceKnobs(requests=200, seed=3)
    assert generate_trace(knobs) == generate_trace(knobs)
    assert generate_trace(knobs) != generate_trace(TraceKnobs(requests=200, seed=4))


@pytest.mark.parametrize(("repeat", "paraphrase"), [(0.1, 0.5), (0.3, 0.3), (0.0, 0.8)])
def test_kind_shares_follow_the_knobs(repeat: float, paraphrase: float) -> None:
    shares = trace_shares(generate_trace(TraceKnobs(requests=5000, repeat_share=repeat, paraphrase_share=paraphrase)))
    assert shares.get("repeat", 0.0) == pytest.approx(repeat, abs=0.02)
    assert shares.get("paraphrase", 0.0) == pytest.approx(paraphrase, abs=0.02)
    assert shares["fresh"] == pytest.approx(1 - repeat - paraphrase, abs=0.02)


def test_repeats_are_exact_and_paraphrases_reword_their_topic() -> None:
    trace = generate_trace(TraceKnobs(requests=600, repeat_share=0.2, paraphrase_share=0.5, seed=1))
    by_topic: dict[int, list[str]] = {}
    reworded = 0
    for request in trace:
        topic, kind = request.extra["topic"], request.extra["kind"]
        earlier = by_topic.setdefault(topic, [])
        if kind == "fresh":
            assert not earlier, "a fresh request starts its topic"
        elif kind == "repeat":
            assert request.prompt in earlier
        else:
            assert earlier, "a paraphrase rewords a topic seen before"
            reworded += request.prompt not in earlier
        earlier.append(request.prompt)
    paraphrases = sum(r.extra["kind"] == "paraphrase" for r in trace)
    assert reworded >= 0.95 * paraphrases


def test_topics_drift_out_of_use() -> None:
    trace = generate_trace(TraceKnobs(requests=900, active_topics=10, topic_drift=0.2, seed=2))
    first = {r.extra["topic"] for r in trace[:300]}
    last = {r.extra["topic"] for r in trace[-300:]}
    assert not first & last, "reuse draws only from the most recent topics"


def test_times_are_increasing_poisson_at_the_given_rate() -> None:
    trace = generate_trace(TraceKnobs(requests=4000, seed=5), rate_per_s=2.0)
    times = [r.t for r in trace]
    assert times == sorted(times) and times[0] == 0.0
    assert (len(times) - 1) / times[-1] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(
    "knobs",
    [
        {"requests": 0},
        {"repeat_share": 0.6, "paraphrase_share": 0.5},
        {"repeat_share": -0.1},
        {"topic_drift": 1.0},
        {"active_topics": 0},
    ],
)
def test_bad_knobs_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TraceKnobs(**knobs)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    trace = [
        TraceRequest(0.0, "a fox at dusk", extra={"kind": "fresh", "topic": 0}),
        TraceRequest(1.5, "a fox at sunset", tenant="team-a", params={"steps": 4, "seed": 7}),
    ]
    path = write_trace(trace, tmp_path / f"trace{suffix}")
    assert read_trace(path) == trace


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_header_travels_with_the_trace_and_is_no_request(tmp_path: Path, suffix: str) -> None:
    trace = [TraceRequest(0.0, "a fox", params={"steps": 30}), TraceRequest(2.0, "a fox, 8 k")]
    meta = {"builder": "prompts", "timing": {"rate": 1.0}}
    path = write_trace(trace, tmp_path / f"trace{suffix}", meta=meta)
    assert read_trace(path) == trace and read_trace_meta(path) == meta
    assert read_trace_meta(write_trace(trace, tmp_path / f"bare{suffix}")) is None


def test_reading_sorts_by_time_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"t": 2, "prompt": "b"}\n\n{"t": 1, "prompt": "a"}\n')
    assert [r.prompt for r in read_trace(path)] == ["a", "b"]
    path.write_text('{"t": 0, "prompt": "a", "params": {"size": 3}}\n')
    with pytest.raises(ValueError, match="request 1: unknown params size"):
        read_trace(path)


def test_diffusiondb_metadata_becomes_a_trace(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = datetime(2022, 8, 1, 12, 0, 0)
    table = pa.table(
        {
            "prompt": ["second", "first", "", "third"],
            "timestamp": [start + timedelta(seconds=30), start, start, start + timedelta(seconds=95)],
            "seed": [1, 2, 3, 4],
        }
    )
    pq.write_table(table, tmp_path / "metadata.parquet")
    trace = import_diffusiondb(tmp_path / "metadata.parquet")
    assert [(r.t, r.prompt) for r in trace] == [(0.0, "first"), (30.0, "second"), (95.0, "third")]
    assert len(import_diffusiondb(tmp_path / "metadata.parquet", limit=2)) == 2


@pytest.mark.parametrize("requests", [300, 400])
def test_the_shipped_traces_are_reproduced_by_their_command(tmp_path: Path, requests: int) -> None:
    out = tmp_path / "again.jsonl"
    script = ROOT / "benchmarks/traces/make_trace.py"
    command = [sys.executable, str(script), "synthetic", "--requests", str(requests), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    assert out.read_bytes() == (ROOT / f"benchmarks/traces/modm-{requests}.jsonl").read_bytes()
