"""The `modm` command as the README uses it: build a tiny model, serve it, stop it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modm.cli.main import app
from modm.launch import ServiceProcess, free_port
from modm.services.worker.pipeline import DiffusionRunner

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


def test_modm_worker_tiny_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    modm = shutil.which("modm", path=str(Path(sys.executable).parent))
    assert modm is not None, "the modm entry point is installed next to the interpreter"
    log = tmp_path / "worker.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [modm, "worker", "--tiny", "sd", "--port", str(port), "--data-dir", str(tmp_path / "home")]
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    worker = ServiceProcess(proc, port, log)
    try:
        worker.wait_serving()
        assert (tmp_path / "home" / "models" / "tiny-sd" / "model_index.json").exists()
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
