"""Shipped example configs must name real settings with valid values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from modm.services.cache.settings import CacheSettings
from modm.services.router.settings import RouterSettings
from modm.services.worker.settings import WorkerSettings

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))
SETTINGS = {"large": WorkerSettings, "small": WorkerSettings, "cache": CacheSettings, "router": RouterSettings}
# What `modm up` fills in itself: the router is pointed at the workers it starts.
SUPPLIED_BY_UP = {"router": {"large_workers": "127.0.0.1:50061", "small_workers": "127.0.0.1:50062"}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_tables_are_valid_settings(path: Path) -> None:
    config = tomllib.loads(path.read_text())
    assert set(config) <= set(SETTINGS)
    for table, values in config.items():
        SETTINGS[table](**{**SUPPLIED_BY_UP.get(table, {}), **values})
