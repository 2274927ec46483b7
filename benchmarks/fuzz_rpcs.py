"""Fuzz every public RPC (worker, cache, router) and the validators behind them, longer than CI does.

Runs the property-based suites (tests/unit/test_fuzz_validators.py, tests/unit/test_hostile_*.py
and tests/integration/test_hostile_rpcs.py, which starts a real cache, tiny worker and router on
loopback) with every hypothesis example count multiplied by `--scale`, collects the tallies the
suites append to a report (cases tried per RPC or validator, and how each ended), and writes
them to bench-out/fuzz_rpcs.json and bench-out/fuzz_rpcs.md. Any case that ended in a crash,
INTERNAL or UNKNOWN fails its suite, and this script exits non-zero.

    python benchmarks/fuzz_rpcs.py                    # scale 5, unit and RPC suites
    python benchmarks/fuzz_rpcs.py --scale 20 --only unit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {
    "unit": [
        "tests/unit/test_fuzz_validators.py",
        "tests/unit/test_hostile_serving.py",
        "tests/unit/test_hostile_paths.py",
    ],
    "rpcs": ["tests/integration/test_hostile_rpcs.py"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=5.0, help="Multiplier of every test's example count.")
    parser.add_argument("--only", choices=sorted(SUITES), help="Run one group of suites.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    args = parser.parse_args()

    files = [f for group, names in SUITES.items() if args.only in (None, group) for f in names]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "tally.jsonl"
        env = {**os.environ, "MODM_FUZZ_SCALE": str(args.scale), "MODM_FUZZ_REPORT": str(report)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT, env=env, check=False
        )
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []

    cases: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for row in rows:
        cases.update(row["cases"])
        outcomes.update(row["outcomes"])
    summary = {
        "scale": args.scale,
        "suites": files,
        "passed": done.returncode == 0,
        "seconds": round(seconds, 1),
        "total_cases": sum(cases.values()),
        "cases": dict(sorted(cases.items())),
        "outcomes": dict(sorted(outcomes.items())),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_rpcs.json").write_text(json.dumps(summary, indent=2) + "\n")
    verdict = "passed" if summary["passed"] else "FAILED"
    lines = [
        f"# Hostile-input fuzzing (scale {args.scale:g}, {verdict}, {seconds:.0f} s)",
        "",
        "| target | cases | outcomes |",
        "|---|---:|---|",
    ]
    for target, n in sorted(cases.items()):
        ends = ", ".join(
            f"{o.split(' -> ', 1)[1]} {k}" for o, k in sorted(outcomes.items()) if o.split(" -> ", 1)[0] == target
        )
        lines.append(f"| {target} | {n} | {ends} |")
    lines.append(f"| **total** | **{summary['total_cases']}** | |")
    (args.out / "fuzz_rpcs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
