from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.k8s_cluster import local_cluster  # noqa: F401  (fixture: a real local Kubernetes cluster)
from tests.tools import require_tool

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
    """The real helm binary (scripts/fetch_tools puts it into .tools/)."""
    return require_tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """The real kubectl: scripts/build-k8s's (the local cluster's release) when built, else .tools/'s."""
    return require_tool("kubectl")
