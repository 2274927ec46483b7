"""`modm up --config`: the example config becomes each process's environment and valid settings;
worker slots carry both roles' environments; the in-process monitor's settings."""

from __future__ import annotations

import io
import itertools
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from modm.cli.up import (
    MIN_DISCOVERY_S,
    MONITOR_TIMES,
    Emulation,
    Stack,
    _slots,
    _StackLog,
    plan_monitor,
    plan_stack,
    scaled_policy,
)
from modm.services.cache.settings import CacheSettings
from modm.services.monitor.policy import policy_named
from modm.services.router.settings import RouterSettings
from modm.services.worker.settings import WorkerSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "up-sd35-large-sdxl.toml"
SETTINGS = {"cache": CacheSettings, "router": RouterSettings}


def plan(config: dict[str, Any], tmp_path: Path, **kwargs: Any) -> list[Any]:
    ports = itertools.count(41000).__next__
    return plan_stack(config, home=tmp_path, host="127.0.0.1", port=50051, large_model="tiny-large",
                      small_model="tiny-small", with_cache=True, ports=ports, **kwargs)  # fmt: skip


def valid(env: dict[str, str], settings: type, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patched:
        for key, value in env.items():
            patched.setenv(key, value)
        return settings()  # the process would start with valid settings


def test_example_config_reaches_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tomllib.loads(EXAMPLE.read_text())
    members = plan(config, tmp_path)
    by_name = {m.name: m for m in members}
    assert [m.name for m in members] == ["cache", "slot0", "slot1", "router"]
    slot0, slot1 = by_name["slot0"], by_name["slot1"]
    assert slot0.env["MODM_WORKER_MODEL"] == "stabilityai/stable-diffusion-3.5-large"
    assert slot0.env["MODM_WORKER_ROLE"] == "large" and slot1.env["MODM_WORKER_ROLE"] == "small"
    assert slot1.env["MODM_WORKER_DEVICE"] == "cuda:1"
    # a slot is a GPU: switched to the other model it keeps its device, and takes that model's settings
    assert slot1.roles["large"]["MODM_WORKER_DEVICE"] == "cuda:1"
    assert slot1.roles["large"]["MODM_WORKER_DTYPE"] == "bf16"
    assert slot0.roles["small"]["MODM_WORKER_DEVICE"] == "cuda:0"
    assert slot0.roles["small"]["MODM_WORKER_PORT"] == slot0.env["MODM_WORKER_PORT"]
    assert by_name["cache"].env["MODM_CACHE_EMBEDDER"] == "open_clip"
    router = by_name["router"].env
    assert router["MODM_ROUTER_WORKERS"] == f"127.0.0.1:{slot0.port},127.0.0.1:{slot1.port}"
    assert "MODM_ROUTER_LARGE_WORKERS" not in router  # pools come from each worker's Info
    for member in members:
        if member.roles:
            for role, env in member.roles.items():
                assert valid(env, WorkerSettings, monkeypatch).role == role
        else:
            valid(member.env, SETTINGS[member.name], monkeypatch)


def test_the_http_api_port_reaches_the_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan({}, tmp_path)[-1].env["MODM_ROUTER_HTTP_PORT"] == "0"  # off unless asked for
    router = plan({}, tmp_path, http_port=8123)[-1].env
    assert valid(router, RouterSettings, monkeypatch).http_port == 8123
    overridden = plan({"router": {"http_port": 9000}}, tmp_path, http_port=8123)[-1].env
    assert overridden["MODM_ROUTER_HTTP_PORT"] == "9000"  # the config file wins over the flag's default


def test_three_slots_start_two_large_and_one_small(tmp_path: Path) -> None:
    members = plan({}, tmp_path, workers=3)
    slots = _slots(members)
    assert [(s.name, s.role) for s in slots] == [("slot0", "large"), ("slot1", "large"), ("slot2", "small")]
    assert len({s.port for s in slots}) == 3
    assert members[-1].env["MODM_ROUTER_WORKERS"].count("127.0.0.1:") == 3
    assert slots[2].envs["large"]["MODM_WORKER_MODEL"] == "tiny-large"


def test_large_slots_choose_the_first_split(tmp_path: Path) -> None:
    """The baselines need every slot on one model: all large, or all small."""
    for large, roles in ((2, ["large", "large"]), (0, ["small", "small"]), (1, ["large", "small"])):
        assert [s.role for s in _slots(plan({}, tmp_path, large_slots=large))] == roles


def test_each_worker_gets_its_share_of_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slots = _slots(plan({}, tmp_path, workers=2, cores=8))
    for slot in slots:
        for env in slot.envs.values():
            assert valid(env, WorkerSettings, monkeypatch).torch_threads == 4
    crowded = _slots(plan({}, tmp_path, workers=3, cores=2))
    assert {env["MODM_WORKER_TORCH_THREADS"] for s in crowded for env in s.envs.values()} == {"1"}
    pinned = _slots(plan({"small": {"torch_threads": 6}}, tmp_path, workers=2, cores=8))
    assert pinned[1].envs["small"]["MODM_WORKER_TORCH_THREADS"] == "6"  # the config's table wins
    assert pinned[1].envs["large"]["MODM_WORKER_TORCH_THREADS"] == "4"


def test_cpu_workers_run_one_image_at_a_time_unless_configured(tmp_path: Path) -> None:
    cpu = _slots(plan({}, tmp_path))
    assert {env["MODM_WORKER_MAX_BATCH_SIZE"] for s in cpu for env in s.envs.values()} == {"1"}
    gpu = _slots(plan({"large": {"device": "cuda:0"}, "small": {"device": "cuda:1", "max_batch_size": 8}}, tmp_path))
    assert "MODM_WORKER_MAX_BATCH_SIZE" not in gpu[0].envs["large"]
    assert gpu[1].envs["small"]["MODM_WORKER_MAX_BATCH_SIZE"] == "8"


def test_the_monitor_scales_the_slots_and_reads_the_local_router(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret\n")
    config = {"monitor": {"policy": "modm-b", "interval_s": 2}, "router": {"tokens_file": str(tokens)}}
    monitor = plan_monitor(config, router_port=50099, workers=3)
    assert (monitor.scaler, monitor.routers, monitor.total_gpus) == ("local", ["127.0.0.1:50099"], 3)
    assert (monitor.policy, monitor.interval_s) == ("modm-b", 2.0)
    assert monitor.router_token_file == tokens  # the router requires a token: the monitor sends one
    default = plan_monitor({}, router_port=50099, workers=2)
    assert (default.policy, default.interval_s, default.router_token_file) == ("slo-aware", 15.0, None)


def test_every_service_logs_in_the_stacks_one_format(tmp_path: Path) -> None:
    prefixes = {"cache": "MODM_CACHE_", "router": "MODM_ROUTER_"}
    for fmt in ("text", "json"):
        for member in plan({"router": {"port": 50051}}, tmp_path, log_format=fmt):
            envs = member.roles.values() if member.roles else [member.env]
            assert {env[prefixes.get(member.name, "MODM_WORKER_") + "LOG_FORMAT"] for env in envs} == {fmt}
    config = {"router": {"log_format": "json"}}  # a service's own table still decides for it
    assert plan(config, tmp_path)[-1].env["MODM_ROUTER_LOG_FORMAT"] == "json"


def test_the_monitor_logs_text_lines_like_the_services(tmp_path: Path) -> None:
    out = io.StringIO()
    handler = _StackLog(Stack(tmp_path, out), "monitor", "text")
    log = logging.getLogger("test.up.monitor.text")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("decision", extra={"action": "move", "reason": "hits dominate"})
    finally:
        log.removeHandler(handler)
        handler.close()
    line = out.getvalue()
    assert line.startswith("[monitor] 20")
    assert line.endswith(' WARNING monitor test.up.monitor.text: decision action=move reason="hits dominate"\n')


def test_the_terminal_shows_the_monitors_moves_not_every_keep(tmp_path: Path) -> None:
    out = io.StringIO()
    handler = _StackLog(Stack(tmp_path, out), "monitor", "json")
    log = logging.getLogger("test.up.monitor")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("decision", extra={"action": "keep", "reason": "keep 1 large + 1 small: steady"})
        log.warning("decision", extra={"action": "move", "reason": "hits dominate"})
        log.warning("switching slot", extra={"slot": "slot1", "from": "large", "to": "small"})
    finally:
        log.removeHandler(handler)
        handler.close()
    shown = [json.loads(line.removeprefix("[monitor] ")) for line in out.getvalue().splitlines()]
    assert [(e["msg"], e.get("action")) for e in shown] == [("decision", "move"), ("switching slot", None)]
    kept = (tmp_path / "monitor.log").read_text().splitlines()
    assert len(kept) == 3 and json.loads(kept[0])["reason"] == "keep 1 large + 1 small: steady"


def test_emulated_slots_serve_profiles_and_the_stacks_times_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Emulation("sd3.5-large-a100", "sdxl-a100", time_scale=0.1)
    members = plan({"large": {"max_batch_size": 8}}, tmp_path, workers=3, cores=8, emulation=fleet)
    slots = _slots(members)
    assert [s.role for s in slots] == ["large", "large", "small"]
    for slot in slots:
        for role, env in slot.envs.items():
            settings = valid(env, WorkerSettings, monkeypatch)
            assert (settings.device, settings.role, settings.time_scale) == ("emulated", role, 0.1)
            assert settings.profile == {"large": "sd3.5-large-a100", "small": "sdxl-a100"}[role]
            assert "MODM_WORKER_MODEL" not in env and "MODM_WORKER_TORCH_THREADS" not in env  # no torch
    assert slots[2].envs["large"]["MODM_WORKER_MAX_BATCH_SIZE"] == "8"  # a GPU batches: no CPU default of 1
    assert "MODM_WORKER_MAX_BATCH_SIZE" not in slots[0].envs["small"]
    router = valid(members[-1].env, RouterSettings, monkeypatch)
    assert (router.window_s, router.discovery_interval_s) == pytest.approx((6.0, MIN_DISCOVERY_S))
    assert valid(plan({}, tmp_path)[-1].env, RouterSettings, monkeypatch).window_s == 60.0


def test_the_monitors_times_and_its_policys_horizon_scale_with_the_fleet() -> None:
    full = plan_monitor({}, router_port=50099, workers=16)
    scaled = plan_monitor({}, router_port=50099, workers=16, time_scale=0.1)
    for name in MONITOR_TIMES:
        assert getattr(scaled, name) == pytest.approx(getattr(full, name) * 0.1), name
    assert scaled.interval_s == pytest.approx(1.5) and scaled.slo_seconds == pytest.approx(30.0)
    given = plan_monitor({"monitor": {"interval_s": 4}}, router_port=50099, workers=16, time_scale=0.1)
    assert given.interval_s == 4.0  # a table's value is taken as given
    assert scaled_policy("slo-aware", 0.1).horizon_s == pytest.approx(60.0)  # type: ignore[attr-defined]
    assert scaled_policy("modm-b", 0.1) is policy_named("modm-b")  # rates only: nothing to scale
