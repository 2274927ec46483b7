"""A test-only fault hook: prompts carrying a marker make a tiny pipeline fail on purpose.

Off by default. A worker armed with `test_faults` (env `MODM_WORKER_TEST_FAULTS`, a JSON object
of marker -> fault, e.g. `{"POISON": "error", "OOM-ME": "oom"}`) checks every prompt of a
pipeline call before running it, so end-to-end tests can poison one request among many:

- `error`: the call raises a RuntimeError, as a pipeline does on an input it cannot take;
- `oom`: the call raises `torch.OutOfMemoryError`, as CUDA does when the size or batch is too big;
- `break`: the call raises, and so does every later call: a worker that is itself broken.

Only folders written by `build_tiny` accept it; a real model refuses to load with it armed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from modm.services.worker.settings import FaultKind

from . import is_tiny


class FaultHook:
    """Raises the fault of the first marker found in a call's prompts."""

    def __init__(self, faults: Mapping[str, FaultKind]) -> None:
        self._faults = dict(faults)
        self._broken = False

    @classmethod
    def for_model(cls, model: str, faults: Mapping[str, FaultKind]) -> FaultHook:
        if not is_tiny(model):
            raise ValueError(
                f"test_faults: only tiny models (modm models build-tiny) take the test hook; {model} is not one"
            )
        return cls(faults)

    def check(self, prompts: Sequence[str]) -> None:
        if self._broken:
            raise RuntimeError("test hook: the pipeline was broken by an earlier 'break' marker")
        for prompt in prompts:
            for marker, kind in self._faults.items():
                if marker not in prompt:
                    continue
                if kind == "oom":
                    raise torch.OutOfMemoryError(f"CUDA out of memory (test hook: a prompt carries {marker!r})")
                self._broken = kind == "break"
                raise RuntimeError(f"test hook: a prompt carries {marker!r} ({kind})")
