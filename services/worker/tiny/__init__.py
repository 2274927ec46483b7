"""Tiny, randomly initialised diffusers pipelines built in code, for tests and CPU-only runs.

Each family saves a folder that loads with `DiffusionPipeline.from_pretrained` exactly like a hub
model, so the worker's real loading and generation paths run without downloads or a GPU.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch

from .families import FAMILIES, SIZE

TINY_FAMILIES: tuple[str, ...] = tuple(FAMILIES)

DEFAULT_SIZE: int = SIZE
"""Square pixel size every tiny family is sized for; FLUX and SANA must be given it as height/width."""

SIZE_MULTIPLE: dict[str, int] = {name: family.multiple for name, family in FAMILIES.items()}

CALL_KWARGS: dict[str, dict[str, Any]] = {name: dict(family.call_kwargs) for name, family in FAMILIES.items()}
"""Extra keyword arguments a family's tiny pipelines need on every call, text-to-image and image-to-image."""

NEGATIVE_PROMPT: frozenset[str] = frozenset(name for name, spec in FAMILIES.items() if spec.negative_prompt)

IMG2IMG_CLASS: dict[str, str] = {
    family.pipeline.__name__: family.img2img.__name__ for family in FAMILIES.values() if family.img2img
}
"""Image-to-image class per text-to-image class; SanaPipeline has none in diffusers 0.42."""


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
    return pathlib.Path(out_dir)
