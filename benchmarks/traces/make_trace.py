"""Write a trace for `modm bench`: the seeded synthetic one, one imported from DiffusionDB's
metadata, or one built from real prompt files in a data folder (`--data DIR`, see
modm.bench.prompt_data and this folder's README.md).

    .venv/bin/python benchmarks/traces/make_trace.py synthetic --out benchmarks/traces/modm-300.jsonl
    .venv/bin/python benchmarks/traces/make_trace.py diffusiondb --parquet metadata.parquet --limit 2000 \\
        --out bench-out/diffusiondb.jsonl
    .venv/bin/python benchmarks/traces/make_trace.py prompts --data DIR --prompts diffusiondb-5k \\
        --rate 1 --out benchmarks/traces/diffusiondb-5k.jsonl
    .venv/bin/python benchmarks/traces/make_trace.py sessions --data DIR --rate 1 --duration 3600 --days 2 \\
        --out bench-out/alibaba-1h.jsonl

The shipped `modm-300.jsonl` is `synthetic` with the defaults below, and `modm-400.jsonl` the
same with `--requests 400` (its first 300 lines are modm-300's); the shipped DiffusionDB traces'
commands are in README.md. Rerunning a command reproduces its trace byte for byte
(tests/unit/test_bench_traces.py and test_bench_real_prompts.py check that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from modm.bench.prompt_data import PROMPT_FILES  # noqa: E402
from modm.bench.schedule import SHAPES, Timing  # noqa: E402
from modm.bench.sessions import Window  # noqa: E402
from modm.bench.trace_builder import prompt_trace, session_trace  # noqa: E402
from modm.bench.traces import (  # noqa: E402
    TraceKnobs,
    TraceRequest,
    generate_trace,
    import_diffusiondb,
    trace_shares,
    write_trace,
)

DEFAULTS = TraceKnobs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True)
    synthetic = sub.add_parser("synthetic", help="the seeded generator (see modm.bench.traces.TraceKnobs)")
    synthetic.add_argument("--out", type=Path, required=True)
    synthetic.add_argument("--requests", type=int, default=DEFAULTS.requests)
    synthetic.add_argument("--repeat-share", type=float, default=DEFAULTS.repeat_share)
    synthetic.add_argument("--paraphrase-share", type=float, default=DEFAULTS.paraphrase_share)
    synthetic.add_argument("--active-topics", type=int, default=DEFAULTS.active_topics)
    synthetic.add_argument("--topic-drift", type=float, default=DEFAULTS.topic_drift)
    synthetic.add_argument("--seed", type=int, default=DEFAULTS.seed)
    synthetic.add_argument("--rate", type=float, default=1.0, help="recorded arrival rate, requests/s")
    imported = sub.add_parser("diffusiondb", help="DiffusionDB's metadata parquet (prompt, timestamp)")
    imported.add_argument("--parquet", type=Path, required=True)
    imported.add_argument("--out", type=Path, required=True)
    imported.add_argument("--limit", type=int, default=None)
    prompts = sub.add_parser("prompts", help="a prompt file in order, at re-timed arrivals")
    _real_source_arguments(prompts)
    prompts.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    prompts.add_argument("--shape", choices=[s for s in SHAPES if s != "recorded"], default="poisson")
    prompts.add_argument("--rate", type=float, default=1.0, help="requests/s (poisson; ramp start; burst base)")
    prompts.add_argument("--end-rate", type=float, default=None, help="ramp: final requests/s (default 4 x rate)")
    prompts.add_argument("--burst-factor", type=float, default=4.0, help="burst: rate multiplier of the middle third")
    prompts.add_argument("--seed", type=int, default=0)
    sessions = sub.add_parser("sessions", help="prompts on the Alibaba trace's user sessions and arrivals")
    _real_source_arguments(sessions)
    sessions.add_argument("--rate", type=float, required=True, help="target mean requests/s")
    sessions.add_argument("--duration", type=float, required=True, help="target length, seconds")
    sessions.add_argument("--start-day", type=float, default=0.0, help="days into the trace the window starts")
    sessions.add_argument("--days", type=float, default=None, help="window length (default: rate x duration requests)")
    sessions.add_argument("--gap", type=float, default=1800.0, help="seconds of pause that end a user's session")
    sessions.add_argument("--seed", type=int, default=0, help="which sessions a thinned window keeps")
    args = parser.parse_args()
    try:
        requests, meta = BUILDERS[args.source](args)
    except (OSError, ValueError) as error:  # a missing file, a window too small for the rate
        parser.error(str(error))
    if meta is not None:
        print(json.dumps(meta, indent=2))
    print(write_trace(requests, args.out, meta=meta))


Built = tuple[list[TraceRequest], dict[str, Any] | None]  # the requests and the header, if any


def _synthetic(args: argparse.Namespace) -> Built:
    knobs = TraceKnobs(
        args.requests, args.repeat_share, args.paraphrase_share, args.active_topics, args.topic_drift, args.seed
    )
    requests = generate_trace(knobs, rate_per_s=args.rate)
    print(f"{len(requests)} requests, kinds {trace_shares(requests)}")
    return requests, None


def _diffusiondb(args: argparse.Namespace) -> Built:
    requests = import_diffusiondb(args.parquet, limit=args.limit)
    print(f"{len(requests)} requests over {requests[-1].t if requests else 0:.0f} s")
    return requests, None


def _prompts(args: argparse.Namespace) -> Built:
    timing = Timing(args.shape, args.rate, args.end_rate, args.burst_factor, seed=args.seed)
    return prompt_trace(args.data, args.prompts, timing, limit=args.limit)


def _sessions(args: argparse.Namespace) -> Built:
    window = Window(args.rate, args.duration, args.start_day, args.days, args.gap, args.seed)
    return session_trace(args.data, args.prompts, window)


BUILDERS = {"synthetic": _synthetic, "diffusiondb": _diffusiondb, "prompts": _prompts, "sessions": _sessions}


def _real_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="the folder holding the prompt files' folders")
    parser.add_argument("--prompts", choices=list(PROMPT_FILES), default="diffusiondb-5k", help="prompt file")
    parser.add_argument("--out", type=Path, required=True)


if __name__ == "__main__":
    main()
