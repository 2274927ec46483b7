"""What a worker serves is pinned (revision, weights variant) and named by its model id; the
test-only fault hook is armed only on tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from modm.cli.main import app
from modm.services.worker import pipeline, server
from modm.services.worker.pipeline import DiffusionRunner, served_model_id
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.tiny import MARKER_FILE
from modm.services.worker.tiny.faults import FaultHook


class Loaded(Exception):
    """Stops a load once from_pretrained has been called."""


def test_the_model_id_carries_revision_and_variant() -> None:
    assert served_model_id("org/model") == "org/model"
    assert served_model_id("org/model", "3f2a9c1", "fp16") == "org/model@3f2a9c1#fp16"
    assert served_model_id("org/model", variant="fp16") == "org/model#fp16"
    assert len({served_model_id("org/model", rev) for rev in ("v1", "v2")}) == 2


def test_from_pretrained_receives_revision_and_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def from_pretrained(model: str, **kwargs: Any) -> None:
        seen.update(kwargs, model=model)
        raise Loaded

    monkeypatch.setattr(pipeline.DiffusionPipeline, "from_pretrained", from_pretrained)
    settings = WorkerSettings(model="org/model", revision="3f2a9c1", variant="fp16")
    with pytest.raises(Loaded):
        server.load_runner(settings)
    assert (seen["model"], seen["revision"], seen["variant"], seen["use_safetensors"]) == (
        "org/model",
        "3f2a9c1",
        "fp16",
        True,
    )


def test_modm_worker_flags_pin_revision_and_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[WorkerSettings] = []
    monkeypatch.setattr(server, "main", served.append)
    result = CliRunner().invoke(app, ["worker", "--model", "org/model", "--revision", "v1.1", "--variant", "fp16"])
    assert result.exit_code == 0, result.output
    assert (served[0].revision, served[0].variant) == ("v1.1", "fp16")


@pytest.mark.parametrize(("field", "value"), [("revision", "main#x"), ("variant", "fp16@v2"), ("revision", "a b")])
def test_separators_of_the_model_id_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        WorkerSettings(model="org/model", **{field: value})


def test_the_fault_hook_refuses_a_model_that_is_not_tiny(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^test_faults: only tiny models"):
        DiffusionRunner.load(str(tmp_path), device="cpu", dtype="fp32", test_faults={"POISON": "error"})
    (tmp_path / MARKER_FILE).write_text("{}")
    assert isinstance(FaultHook.for_model(str(tmp_path), {"POISON": "error"}), FaultHook)


def test_fault_hook_markers() -> None:
    hook = FaultHook({"POISON": "error", "HUGE": "oom", "BREAK": "break"})
    hook.check(["a cat", "a dog"])
    with pytest.raises(RuntimeError, match="POISON") as poisoned:
        hook.check(["a cat", "a POISON dog"])
    assert not isinstance(poisoned.value, torch.OutOfMemoryError)
    with pytest.raises(torch.OutOfMemoryError):
        hook.check(["a HUGE cat"])
    hook.check(["a cat"])  # neither fault outlives its call
    with pytest.raises(RuntimeError, match="BREAK"):
        hook.check(["BREAK"])
    with pytest.raises(RuntimeError, match="broken"):
        hook.check(["a cat"])  # a break does
