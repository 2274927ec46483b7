"""The two kinds of worker the worker service's tests run: a tiny diffusers pipeline on the CPU,
and the emulated device sleeping by a shipped profile (time-scaled so a step takes milliseconds).

The emulated profile is SD1.5's, the same family as the tiny model the tests use ("sd"), so one
test body serves both kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modm.launch import ServiceProcess
from modm.services.worker.settings import WorkerSettings
from tests.procs import start_worker

KINDS = ("tiny", "emulated")
FAMILY = "sd"
EMULATED_PROFILE = "sd1.5-a100"
# 1.78 s for 50 steps at 512x512 becomes 7 ms a step; the 3.1 s load, 0.6 s.
EMULATED_TIME_SCALE = 0.2


def emulated_settings(time_scale: float = EMULATED_TIME_SCALE) -> dict[str, object]:
    return {"device": "emulated", "profile": EMULATED_PROFILE, "time_scale": time_scale}


def start_worker_of(
    kind: str,
    tiny_model: Callable[[str], Path],
    log_dir: Path,
    emulated_time_scale: float = EMULATED_TIME_SCALE,
    **settings: object,
) -> ServiceProcess:
    """A worker process of `kind` with these MODM_WORKER_* settings; `emulated_time_scale` slows
    the emulation down where a test needs calls to outlast something (1.0: 35 ms a step)."""
    if kind == "tiny":
        return start_worker(tiny_model(FAMILY), log_dir, **settings)
    return start_worker(None, log_dir, **emulated_settings(emulated_time_scale), **settings)


def settings_of(kind: str, tiny_model: Callable[[str], Path], **settings: object) -> WorkerSettings:
    """In-process settings of a worker of `kind`."""
    model = {"model": str(tiny_model(FAMILY))} if kind == "tiny" else emulated_settings()
    return WorkerSettings(**model, **settings)  # type: ignore[arg-type]
