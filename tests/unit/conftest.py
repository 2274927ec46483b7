"""Tests marked `prompt_data` read the team's prompt data folder, which is not in the repository:
MODM_PROMPT_DATA names it. Unset, they are deselected (pytest reports them as such), neither
skipped, which CI counts as a failure, nor passed without reading anything."""

from __future__ import annotations

import os

import pytest

PROMPT_DATA_ENV = "MODM_PROMPT_DATA"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"prompt_data: reads the folder named by {PROMPT_DATA_ENV}; deselected unset")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(PROMPT_DATA_ENV):
        return
    deselected = [item for item in items if item.get_closest_marker("prompt_data")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("prompt_data")]
