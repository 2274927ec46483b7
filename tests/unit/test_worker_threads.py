"""A worker applies its thread budget before it loads, on the thread that loads."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from modm.services.worker import pipeline, server
from modm.services.worker.settings import WorkerSettings


@pytest.fixture
def restore_threads() -> Any:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_torch_threads_is_set_before_the_pipeline_loads(monkeypatch: pytest.MonkeyPatch, restore_threads: Any) -> None:
    seen: list[int] = []
    monkeypatch.setattr(pipeline.DiffusionRunner, "load", lambda *a, **k: seen.append(torch.get_num_threads()))
    target = 1 if torch.get_num_threads() > 1 else 2
    server.load_runner(WorkerSettings(model="m", torch_threads=target))
    assert seen == [target]


def test_no_budget_leaves_torch_alone(monkeypatch: pytest.MonkeyPatch, restore_threads: Any) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(pipeline.DiffusionRunner, "load", lambda *a, **k: None)
    server.load_runner(WorkerSettings(model="m"))
    assert torch.get_num_threads() == before


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="torch_threads"):
        WorkerSettings(model="m", torch_threads=0)
