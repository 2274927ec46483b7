"""The suite's skip rule, run on sample suites in a child pytest: a missing tool (or any other
skip) is a skip on a developer's machine and a failure under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tests.tools
from tests.tools import ROOT, find_tool

TESTS = """
import pytest

from tests.tools import require_tool


def test_needs_a_missing_tool():
    require_tool("modm-no-such-tool")


def test_skips_by_hand():
    pytest.skip("by hand")


def test_passes():
    pass


@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""

MODULE = """
import pytest

pytest.importorskip("modm_no_such_module")


def test_never_collected():
    pass
"""


def run_sample(folder: Path, text: str, ci: str | None) -> tuple[str, str]:
    """(the summary line, the whole output) of pytest over one sample file."""
    (folder / "test_sample.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    options = ["-c", str(ROOT / "pyproject.toml"), "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-rA"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *options, str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.splitlines()[-1], done.stdout


def test_a_missing_tool_is_a_skip_outside_ci(tmp_path: Path) -> None:
    summary, out = run_sample(tmp_path, TESTS, ci=None)
    assert summary.startswith("1 passed, 2 skipped, 1 xfailed"), out
    assert "modm-no-such-tool not found" in out and "run scripts/bootstrap" in out


def test_every_skip_fails_under_ci(tmp_path: Path) -> None:
    summary, out = run_sample(tmp_path, TESTS, ci="true")
    assert summary.startswith("2 failed, 1 passed, 1 xfailed"), out  # an expected failure stays one
    assert "skipped under CI=true, where nothing may be skipped: Skipped: modm-no-such-tool not found" in out
    assert "skipped under CI=true, where nothing may be skipped: Skipped: by hand" in out


def test_a_module_skipped_at_collection_fails_under_ci(tmp_path: Path) -> None:
    summary, out = run_sample(tmp_path, MODULE, ci=None)
    assert summary.startswith("1 skipped"), out
    summary, out = run_sample(tmp_path, MODULE, ci="true")
    assert summary.startswith("1 error"), out
    assert "nothing may be skipped: Skipped: could not import 'modm_no_such_module'" in out


def test_the_tools_folder_comes_before_the_venv_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = tmp_path / "python"
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o755)
    assert find_tool("python") == Path(sys.executable).parent / "python"
    monkeypatch.setattr(tests.tools, "TOOLS_DIR", tmp_path)
    assert find_tool("python") == pinned
    assert find_tool("modm-no-such-tool") is None
