"""Traces from real prompt files, on small files written in the real formats (the real folder's
own checks are in test_bench_real_prompts.py): parsing, reuse labels, sessions, the window and its
time compression, and byte-identical rebuilds."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modm.bench.prompt_data import ALIBABA_FILE, PROMPT_FILES, load_prompts
from modm.bench.reuse import jaccard, reuse_kinds, words
from modm.bench.schedule import Timing
from modm.bench.sessions import Arrival, Window, load_shape, read_arrivals, select, sessions
from modm.bench.trace_builder import prompt_trace, session_trace
from modm.bench.traces import TraceKnobs, generate_trace, read_trace, read_trace_meta

ROOT = Path(__file__).resolve().parents[2]
ALIBABA_COLUMNS = [
    "gmt_create",
    "predict_type",
    "predict_status",
    "exec_time_seconds",
    "groupId",
    "prompt_length",
    "negative_prompt_length",
    "num_images_per_prompt",
    "num_inference_steps",
    "checkpoint_model_version_id",
    "num_lora",
]
START = datetime(2024, 11, 15, 0, 0, 0)


def write_prompt_files(data: Path, lines: list[str]) -> None:
    """The three prompt files of a data folder, each holding `lines` in its own format."""
    for name, spec in PROMPT_FILES.items():
        path = data / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "diffusiondb-5k":
            path.write_text("".join(f"{line} \n" for line in lines), encoding="utf-8")  # trailing space as shipped
        elif name == "diffusiondb-20k":
            with path.open("w", encoding="utf-8", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["image_name", "prompt"])
                writer.writerows([f"{i}.png", line] for i, line in enumerate(lines))
        else:
            rows = ["Prompt\tCategory\tChallenge\tNote"] + [f"{line}\tArts\tBasic\t" for line in lines]
            path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_arrivals(data: Path, rows: list[tuple[float, str, str, str]]) -> None:
    """An Alibaba-format trace: (seconds after START, groupId, steps, images) per request."""
    path = data / ALIBABA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, ALIBABA_COLUMNS)
        writer.writeheader()
        for offset, group, steps, images in rows:
            when = (START + timedelta(seconds=offset)).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow(
                {
                    "gmt_create": when,
                    "predict_type": "TXT_2_IMG",
                    "predict_status": "SUCCEED",
                    "groupId": group,
                    "num_inference_steps": steps,
                    "num_images_per_prompt": images,
                }
            )


def test_the_line_file_drops_empty_lines_and_splits_on_newlines_only(tmp_path: Path) -> None:
    path = tmp_path / PROMPT_FILES["diffusiondb-5k"].path
    path.parent.mkdir(parents=True)
    path.write_text("a castle, 8 k \nan owl\u2028at night\n \nthe owl again\n", encoding="utf-8")
    prompts, described = load_prompts(tmp_path, "diffusiondb-5k")
    assert prompts == ["a castle, 8 k", "an owl\u2028at night", "the owl again"]
    assert described["file"] == PROMPT_FILES["diffusiondb-5k"].path and len(described["sha256"]) == 64


def test_the_csv_file_keeps_quoted_commas_quotes_and_newlines(tmp_path: Path) -> None:
    lines = ["a fox, at dusk, 8 k", 'the word "peace" on a wall', "two\nlines", "plain"]
    write_prompt_files(tmp_path, lines)
    with (tmp_path / PROMPT_FILES["diffusiondb-20k"].path).open("a") as file:
        file.write('x.png,""\n')  # an empty prompt, dropped
    assert load_prompts(tmp_path, "diffusiondb-20k")[0] == lines


def test_the_tsv_file_keeps_a_leading_quoted_word(tmp_path: Path) -> None:
    lines = ['"G I G G L E" painted on a wall', 'a club called "The Wanderers"']
    write_prompt_files(tmp_path, lines)
    assert load_prompts(tmp_path, "parti")[0] == lines


def test_missing_files_and_columns_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data names the folder that holds diffusiondb_2m_first5k"):
        load_prompts(tmp_path, "diffusiondb-5k")
    with pytest.raises(ValueError, match="unknown prompt source"):
        load_prompts(tmp_path, "coco")
    path = tmp_path / PROMPT_FILES["diffusiondb-20k"].path
    path.parent.mkdir(parents=True)
    path.write_text("image_name,text\nx.png,a fox\n")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        load_prompts(tmp_path, "diffusiondb-20k")


def test_alibaba_rows_become_sorted_arrivals_with_whole_counts(tmp_path: Path) -> None:
    write_arrivals(tmp_path, [(60, "G1", "30.0", "4.0"), (0, "G0", "", ""), (60, "G2", "40.0", "1.0")])
    arrivals = read_arrivals(tmp_path / ALIBABA_FILE)
    origin = START.replace(tzinfo=UTC).timestamp()  # the trace's clock, whatever the machine's zone
    assert [(a.t - origin, a.user, a.steps, a.images) for a in arrivals] == [
        (0.0, "G0", None, None),
        (60.0, "G1", 30, 4),
        (60.0, "G2", 40, 1),
    ]


def test_reuse_kinds_label_repeats_near_duplicates_and_fresh_prompts() -> None:
    prompts = [
        "a red fox in the snow, oil painting",
        "a red fox in the snow, oil painting, 8 k",  # 7 of 8 words: near
        "a red fox in the snow, oil painting",  # the same text: repeat
        "a lighthouse at dusk",  # fresh
        "lighthouse",  # 1 of 4 words: fresh
    ]
    assert reuse_kinds(prompts) == ["fresh", "near", "repeat", "fresh", "fresh"]


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_reuse_kinds_match_comparing_every_pair(threshold: float) -> None:
    prompts = [r.prompt for r in generate_trace(TraceKnobs(requests=400, seed=7))]
    expected, seen = [], set()
    for i, prompt in enumerate(prompts):
        close = any(jaccard(words(prompt), words(prompts[j])) >= threshold for j in range(i))
        expected.append("repeat" if prompt in seen else "near" if close else "fresh")
        seen.add(prompt)
    kinds = reuse_kinds(prompts, threshold)
    assert kinds == expected and {"fresh", "near", "repeat"} <= set(kinds)


def arrival(t: float, user: str) -> Arrival:
    return Arrival(t, user)


def test_a_session_is_a_users_requests_within_the_gap() -> None:
    trace = [arrival(0, "a"), arrival(10, "b"), arrival(100, "a"), arrival(2000, "a"), arrival(2100, "b")]
    assert sessions(trace, gap_s=1800) == [[0, 2], [1], [3], [4]]
    assert sessions(trace, gap_s=3000) == [[0, 2, 3], [1, 4]]


def test_the_default_window_holds_exactly_the_requests_asked_for() -> None:
    trace = [arrival(100.0 * i, f"u{i % 3}") for i in range(50)]
    chosen = select(trace, Window(rate=0.5, duration_s=40))
    assert [a.t for a in chosen.arrivals] == [100.0 * i for i in range(20)]
    assert chosen.span_s == 1900.0 and chosen.origin == 0.0
    later = select(trace, Window(rate=0.5, duration_s=40, start_day=0.0125))  # 1,080 s in
    assert later.arrivals[0].t == 1100.0 and len(later.arrivals) == 20


def test_a_wider_window_is_thinned_by_whole_sessions() -> None:
    # 40 users, each a session of 5 requests a minute apart; sessions start every 100 s
    trace = sorted((arrival(100.0 * u + 60.0 * k, f"u{u}") for u in range(40) for k in range(5)), key=lambda a: a.t)
    window = Window(rate=1.0, duration_s=60, days=1.0, seed=3)
    chosen = select(trace, window)
    assert len(chosen.arrivals) == 60  # 12 whole sessions
    users = {a.user for a in chosen.arrivals}
    assert len(users) == 12 and all(sum(a.user == u for a in chosen.arrivals) == 5 for u in users)
    assert list(dict.fromkeys(chosen.session)) == list(range(12)), "sessions numbered by first request"
    assert users != {a.user for a in select(trace, Window(1.0, 60, days=1.0, seed=4)).arrivals}


def test_a_window_too_small_for_the_rate_is_refused() -> None:
    trace = [arrival(10.0 * i, "u") for i in range(30)]
    with pytest.raises(ValueError, match="holds 30 requests, fewer than the 40"):
        select(trace, Window(rate=1.0, duration_s=40))
    with pytest.raises(ValueError, match="fewer than"):
        select(trace, Window(rate=0.1, duration_s=100, days=50 / 86400))


def test_load_shape_sees_a_daily_peak_and_a_burst() -> None:
    day = [3600.0 * h + 1 for h in range(24) for _ in range(4 if h == 12 else 1)]  # noon is 4x busier
    shape = load_shape(day + [t + 86400 for t in day], origin=0.0, span_s=2 * 86400)
    assert shape["hours"] == 48
    assert shape["diurnal_peak_to_mean"] == pytest.approx(4 / (27 / 24), abs=1e-3)
    burst = load_shape(day + [86400.0 + 3600 * 5 + 1] * 30, origin=0.0, span_s=2 * 86400)
    assert burst["busiest_hour_to_mean"] > burst["diurnal_peak_to_mean"] > 1


def test_a_prompt_trace_keeps_file_order_at_the_chosen_rate(tmp_path: Path) -> None:
    lines = [f"prompt number {i}" for i in range(400)]
    write_prompt_files(tmp_path, lines)
    requests, meta = prompt_trace(tmp_path, "parti", Timing("poisson", rate=4.0, seed=1), limit=300)
    assert [r.prompt for r in requests] == lines[:300]
    times = [r.t for r in requests]
    assert times == sorted(times) and times[0] == 0.0
    assert meta["requests"] == 300 and meta["mean_rate"] == pytest.approx(4.0, rel=0.15)
    assert meta["prompts"]["file"] == PROMPT_FILES["parti"].path
    with pytest.raises(ValueError, match="no times"):
        prompt_trace(tmp_path, "parti", Timing("recorded"))


def session_fixture(data: Path) -> list[str]:
    """Prompts and a day of arrivals: 30 users, each with 3 sessions of 4 requests."""
    lines = [f"a prompt about subject {i // 3}, take {i % 3}" for i in range(200)]
    write_prompt_files(data, lines)
    rows = [
        (user * 37.0 + session * 7200.0 + k * 120.0, f"G{user:04d}", "30.0", "8.0")
        for user in range(30)
        for session in range(3)
        for k in range(4)
    ]
    write_arrivals(data, rows)
    return lines


def test_a_session_trace_scales_time_to_the_target_and_keeps_order(tmp_path: Path) -> None:
    lines = session_fixture(tmp_path)
    source = read_arrivals(tmp_path / ALIBABA_FILE)
    requests, meta = session_trace(tmp_path, "diffusiondb-5k", Window(rate=2.0, duration_s=60, days=1.0))
    assert len(requests) == pytest.approx(120, abs=4) and meta["mean_rate"] == pytest.approx(2.0, rel=0.05)
    times = [r.t for r in requests]
    assert times == sorted(times) and times[-1] <= 60.0
    assert meta["compression"] == 1440.0  # a day into a minute
    for request in requests:  # each request at one of its user's source times, compressed
        back = request.t * 1440.0 + source[0].t
        assert any(a.user == request.extra["user"] and abs(a.t - back) < 1e-3 for a in source)
    assert all(r.params == {"steps": 30} and r.extra["images"] == 8 for r in requests)
    runs: dict[int, list[str]] = {}
    for request in requests:
        runs.setdefault(request.extra["session"], []).append(request.prompt)
    flat = [p for s in sorted(runs) for p in runs[s]]
    assert flat == lines[: len(flat)], "sessions take consecutive runs of the file, in order of their start"
    assert meta["session_lengths"]["median"] == 4 and meta["prompt_passes"] == 1


def test_a_session_trace_longer_than_the_file_starts_the_file_over(tmp_path: Path) -> None:
    session_fixture(tmp_path)
    requests, meta = session_trace(tmp_path, "parti", Window(rate=1.0, duration_s=300))
    assert meta["prompt_passes"] == 2 and len(requests) == 300
    assert meta["kinds"]["repeat"] > 0


@pytest.mark.parametrize(
    "command",
    [
        ["prompts", "--prompts", "diffusiondb-20k", "--shape", "burst", "--rate", "2"],
        ["sessions", "--rate", "1", "--duration", "60", "--days", "1"],
    ],
)
def test_the_same_inputs_and_seed_give_the_same_bytes(tmp_path: Path, command: list[str]) -> None:
    session_fixture(tmp_path)
    script = ROOT / "benchmarks/traces/make_trace.py"

    def build(name: str, seed: str) -> bytes:
        out = tmp_path / name
        args = [sys.executable, str(script), *command, "--data", str(tmp_path), "--seed", seed, "--out", str(out)]
        subprocess.run(args, check=True, capture_output=True)
        return out.read_bytes()

    first = build("a.jsonl", "5")
    assert first == build("b.jsonl", "5")
    assert first != build("c.jsonl", "6")
    assert read_trace_meta(tmp_path / "a.jsonl")["window" if command[0] == "sessions" else "timing"]["seed"] == 5
    assert read_trace(tmp_path / "a.jsonl")
