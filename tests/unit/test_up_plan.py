"""`modm up --config`: the example config becomes each process's environment and valid settings."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from modm.cli.up import plan_stack
from modm.services.cache.settings import CacheSettings
from modm.services.router.settings import RouterSettings
from modm.services.worker.settings import WorkerSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "up-sd35-large-sdxl.toml"
SETTINGS = {"cache": CacheSettings, "large": WorkerSettings, "small": WorkerSettings, "router": RouterSettings}


def test_example_config_reaches_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tomllib.loads(EXAMPLE.read_text())
    ports = itertools.count(41000).__next__
    members = plan_stack(config, home=tmp_path, host="127.0.0.1", port=50051, large_model="tiny-large",
                         small_model="tiny-small", with_cache=True, ports=ports)  # fmt: skip
    by_name = {m.name: m for m in members}
    assert [m.name for m in members] == ["cache", "large", "small", "router"]
    assert by_name["large"].env["MODM_WORKER_MODEL"] == "stabilityai/stable-diffusion-3.5-large"
    assert by_name["small"].env["MODM_WORKER_DEVICE"] == "cuda:1"
    assert by_name["cache"].env["MODM_CACHE_EMBEDDER"] == "open_clip"
    router = by_name["router"].env
    assert router["MODM_ROUTER_LARGE_WORKERS"] == f"127.0.0.1:{by_name['large'].port}"
    assert router["MODM_ROUTER_SMALL_WORKERS"] == f"127.0.0.1:{by_name['small'].port}"
    for member in members:
        with monkeypatch.context() as env:
            for key, value in member.env.items():
                env.setenv(key, value)
            SETTINGS[member.name]()  # the process would start with valid settings
