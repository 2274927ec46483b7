"""Tiny, randomly initialised diffusers pipelines built in code, for tests and CPU-only runs.

Each family saves a folder that loads with `DiffusionPipeline.from_pretrained` exactly like a hub
model, so the worker's real loading and generation paths run without downloads or a GPU.
"""

from __future__ import annotations

import json
import pathlib

import torch

from .families import FAMILIES, SIZE

TINY_FAMILIES: tuple[str, ...] = tuple(FAMILIES)

DEFAULT_SIZE: int = SIZE
"""Native square size in pixels of every tiny family, so any family can refine another's images."""


MARKER_FILE = "modm-tiny.json"
"""Written by `build_tiny` beside `model_index.json`; the worker's test-only fault hook accepts
only folders that have it (`services/worker/tiny/faults.py`)."""


def is_tiny(model: str | pathlib.Path) -> bool:
    """Whether `model` is a folder that `build_tiny` wrote."""
    return (pathlib.Path(model) / MARKER_FILE).is_file()


def build_tiny(family: str, out_dir: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Build `family` with weights drawn from `seed` and save it as safetensors into `out_dir`.

    The global torch RNG is restored afterwards, so building never perturbs a caller's seeding.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {', '.join(TINY_FAMILIES)}")
    spec = FAMILIES[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipeline = spec.pipeline(**spec.components())
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    (pathlib.Path(out_dir) / MARKER_FILE).write_text(json.dumps({"family": family, "seed": seed}) + "\n")
    return pathlib.Path(out_dir)
