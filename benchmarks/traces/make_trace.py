"""Write a trace for `modm bench`: the seeded synthetic one, or one imported from DiffusionDB.

    .venv/bin/python benchmarks/traces/make_trace.py synthetic --out benchmarks/traces/modm-300.jsonl
    .venv/bin/python benchmarks/traces/make_trace.py diffusiondb --parquet metadata.parquet --limit 2000 \\
        --out bench-out/diffusiondb.jsonl

The shipped `modm-300.jsonl` is `synthetic` with the defaults below, and `modm-400.jsonl` the
same with `--requests 400` (its first 300 lines are modm-300's); rerunning the commands
reproduces them byte for byte (tests/unit/test_bench_traces.py checks that).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from modm.bench.traces import (  # noqa: E402
    TraceKnobs,
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
    args = parser.parse_args()
    if args.source == "synthetic":
        knobs = TraceKnobs(
            args.requests, args.repeat_share, args.paraphrase_share, args.active_topics, args.topic_drift, args.seed
        )
        requests = generate_trace(knobs, rate_per_s=args.rate)
        print(f"{len(requests)} requests, kinds {trace_shares(requests)}")
    else:
        requests = import_diffusiondb(args.parquet, limit=args.limit)
        print(f"{len(requests)} requests over {requests[-1].t if requests else 0:.0f} s")
    print(write_trace(requests, args.out))


if __name__ == "__main__":
    main()
