"""The `modm` command as the README uses it: build a tiny model, serve it, stop it; emulate a
shipped profile; record a profile on a real worker and emulate that."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from modm.cli.main import app
from modm.launch import ServiceProcess, free_port
from modm.services.worker.device_profile import load_profile
from modm.services.worker.pipeline import DiffusionRunner
from modm.v1 import worker_pb2, worker_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_build_tiny_writes_a_loadable_pipeline(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "build-tiny", "--family", "sd", "--out", str(tmp_path / "sd")])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]) == tmp_path / "sd"
    assert DiffusionRunner.load(str(tmp_path / "sd"), device="cpu", dtype="fp32").facts.family.name == "sd"


def test_build_tiny_rejects_an_unknown_family(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "build-tiny", "--family", "sd9", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "--family" in result.output


def test_only_safetensors_weights_are_loaded(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pickled = tmp_path / "pickled"
    DiffusionPipeline.from_pretrained(tiny_model("sd")).save_pretrained(pickled, safe_serialization=False)
    assert list(pickled.rglob("*.bin")), "the UNet and VAE are pickled (transformers keeps safetensors)"
    with pytest.raises(EnvironmentError, match="safetensors"):
        DiffusionRunner.load(str(pickled), device="cpu", dtype="fp32")


def modm_worker(log: Path, *flags: str) -> ServiceProcess:
    """`modm worker FLAGS --port <free>` in its own process, writing its output to `log`."""
    port = free_port()
    modm = shutil.which("modm", path=str(Path(sys.executable).parent))
    assert modm is not None, "the modm entry point is installed next to the interpreter"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [modm, "worker", *flags, "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return ServiceProcess(proc, port, log)


def info(worker: ServiceProcess) -> worker_pb2.WorkerInfo:
    with grpc.insecure_channel(worker.address) as channel:
        return worker_pb2_grpc.WorkerStub(channel).Info(worker_pb2.InfoRequest(), timeout=10)


def test_modm_worker_tiny_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    worker = modm_worker(tmp_path / "worker.log", "--tiny", "sd", "--data-dir", str(tmp_path / "home"))
    try:
        worker.wait_serving()
        assert (tmp_path / "home" / "models" / "tiny-sd" / "model_index.json").exists()
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()


def test_modm_worker_emulates_a_shipped_profile(tmp_path: Path) -> None:
    worker = modm_worker(
        tmp_path / "worker.log", "--device", "emulated", "--profile", "sdxl-a100", "--time-scale", "0.01"
    )
    try:
        worker.wait_serving()
        served = info(worker)
        assert (served.model_id, served.device, served.role) == (
            "emulated:sdxl-a100",
            "emulated",
            worker_pb2.WORKER_ROLE_SMALL,
        )
        assert served.load_seconds == pytest.approx(load_profile("sdxl-a100").load_seconds * 0.01)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()


def test_a_profile_recorded_on_a_tiny_model_is_emulated(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    path = tmp_path / "tiny-sd-cpu.toml"
    real = modm_worker(
        tmp_path / "real.log", "--model", str(tiny_model("sd")), "--profile-out", str(path), "--max-batch-size", "2"
    )
    try:
        real.wait_serving()  # the profile is written after warm-up, before SERVING
        measured = info(real)
    finally:
        assert real.stop(signal.SIGTERM) == 0, real.log_tail()
    recorded = load_profile(str(path))
    assert (recorded.model, recorded.family, recorded.role, recorded.dtype) == (
        measured.model_id,
        "sd",
        "large",
        "fp32",
    )
    assert recorded.device.startswith("cpu") and recorded.recorded
    assert (recorded.width, recorded.size_multiple, recorded.default_steps) == (
        measured.default_width,
        measured.size_multiple,
        measured.default_steps,
    )
    assert recorded.seconds_per_step == pytest.approx(measured.seconds_per_step)
    assert recorded.overhead_seconds == pytest.approx(measured.overhead_seconds)
    assert recorded.load_seconds == pytest.approx(measured.load_seconds) and recorded.load_seconds > 0
    assert sorted(recorded.batch) == [1, 2]  # batch 4 is past --max-batch-size

    emulated = modm_worker(
        tmp_path / "emulated.log", "--device", "emulated", "--profile", str(path), "--time-scale", "0.5"
    )
    try:
        emulated.wait_serving()
        served = info(emulated)
        assert (served.model_id, served.family, served.role) == (
            "emulated:tiny-sd-cpu",
            "sd",
            worker_pb2.WORKER_ROLE_LARGE,
        )
        assert (served.default_width, served.default_steps) == (measured.default_width, measured.default_steps)
        assert served.load_seconds == pytest.approx(recorded.load_seconds * 0.5)
    finally:
        assert emulated.stop(signal.SIGTERM) == 0, emulated.log_tail()
