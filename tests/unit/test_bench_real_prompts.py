"""The real prompt data folder (MODM_PROMPT_DATA; deselected when unset, see conftest.py): its
files read as published, the shipped traces are rebuilt byte for byte by the commands in
benchmarks/traces/README.md, and what the builder measures on them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from modm.bench.prompt_data import ALIBABA_FILE, load_prompts
from modm.bench.schedule import Timing
from modm.bench.sessions import Window, read_arrivals, sessions
from modm.bench.trace_builder import prompt_trace, session_trace
from modm.bench.traces import read_trace_meta
from tests.unit.conftest import PROMPT_DATA_ENV

pytestmark = pytest.mark.prompt_data
ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "benchmarks/traces"


@pytest.fixture
def data() -> Path:
    return Path(os.environ[PROMPT_DATA_ENV])


def test_the_files_read_as_published(data: Path) -> None:
    five_k = load_prompts(data, "diffusiondb-5k")[0]
    assert len(five_k) == 4999, "5,000 lines, line 3972 empty"
    assert five_k[3970:3972] == ["a portrait painting of emily liao", "a portrait painting of saul schilhab"]
    assert len(load_prompts(data, "diffusiondb-20k")[0]) == 20000 - 11  # 11 rows have no prompt
    parti = load_prompts(data, "parti")[0]
    assert len(parti) == 1632 and any(p.startswith('"G I G G L E"') for p in parti)
    arrivals = read_arrivals(data / ALIBABA_FILE)
    assert len(arrivals) == 26823 and len({a.user for a in arrivals}) == 4247
    assert len(sessions(arrivals, gap_s=1800)) == 5904


def documented_commands() -> dict[str, list[str]]:
    """Each `make_trace.py` command in the README, by the trace it writes."""
    text = (TRACES / "README.md").read_text().replace("\\\n", " ")
    commands = {}
    for line in text.splitlines():
        if "make_trace.py" in line and (out := re.search(r"--out (benchmarks/traces/\S+)", line)):
            commands[out.group(1)] = shlex.split(line.strip())
    return commands


def test_every_shipped_real_trace_is_rebuilt_by_its_readme_command(data: Path, tmp_path: Path) -> None:
    commands = documented_commands()
    shipped = {f"benchmarks/traces/{p.name}" for p in TRACES.glob("*.jsonl") if read_trace_meta(p) is not None}
    assert shipped and shipped == set(commands)
    for target, words in commands.items():
        out = tmp_path / Path(target).name
        args = [str(data) if w == "$DATA" else str(out) if w == target else w for w in words[1:]]
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
        assert out.read_bytes() == (ROOT / target).read_bytes(), target


def test_what_the_builder_measures(data: Path) -> None:
    _, meta = prompt_trace(data, "diffusiondb-5k", Timing("poisson", 1.0))
    kinds = meta["kinds"]
    assert round(kinds["repeat"] * meta["requests"]) == 655  # exact repeats in the 5k file
    assert kinds["repeat"] + kinds["near"] == pytest.approx(0.58, abs=0.01)
    requests, meta = session_trace(data, "diffusiondb-5k", Window(rate=1.0, duration_s=3600, days=23))
    assert meta["mean_rate"] == pytest.approx(1.0, rel=0.02) and meta["compression"] == 552.0
    assert meta["load"]["diurnal_peak_to_mean"] > 2.0 and meta["session_lengths"]["median"] == 2
    assert [r.t for r in requests] == sorted(r.t for r in requests)
