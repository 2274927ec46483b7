"""How long one model takes on one device: the emulated device's latency model, and the file
format that shipped profiles (profiles/*.toml) and `modm worker --profile-out` share.

The model of one pipeline call of `batch` images of width x height running `steps` steps:

    seconds = batch_factor(batch) x (width x height) / (profile width x height)
              x (overhead_seconds + steps x seconds_per_step)

Time is linear in pixels (a simplification: attention grows faster than that, but at the sizes
served the convolutions and MLPs, linear in pixels, dominate), and the batch factor is linear
between the profile's measured points and proportional to the batch beyond the largest (a
saturated GPU gains nothing more from batching).
"""

from __future__ import annotations

import json
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modm.services.worker.families import FAMILIES_BY_NAME, FamilySpec

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile that cannot be found or read; the message names the file and what is wrong."""


class DeviceProfile(BaseModel):
    """One model on one device at its default size, batch 1 unless `batch` says otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The file's stem: `emulated:<name>` is the emulated model id.")
    family: str = Field(description="Pipeline family (families.py): sets steps, guidance and img2img rounding.")
    role: Literal["large", "small"]
    model: str = Field(description="The model the times are for.")
    device: str = Field(description="What the times were measured (or estimated) on.")
    dtype: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    size_multiple: int = Field(gt=0)
    default_steps: int = Field(gt=0)
    seconds_per_step: float = Field(gt=0)
    overhead_seconds: float = Field(ge=0)
    load_seconds: float = Field(ge=0)
    batch: dict[int, float] = Field(
        default_factory=lambda: {1: 1.0}, description="Seconds of a call of B images relative to batch 1."
    )
    recorded: str = Field("", description="When `--profile-out` recorded it; empty for the shipped ones.")

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in FAMILIES_BY_NAME:
            raise ValueError(f"unknown family {value!r}; expected one of {', '.join(sorted(FAMILIES_BY_NAME))}")
        return value

    @field_validator("batch")
    @classmethod
    def _batch_points(cls, value: dict[int, float]) -> dict[int, float]:
        if any(size < 1 or factor <= 0 for size, factor in value.items()):
            raise ValueError("batch sizes must be >= 1 and their factors > 0")
        if value.get(1, 1.0) != 1.0:
            raise ValueError("batch 1 is the unit: its factor is 1.0")
        return dict(sorted({1: 1.0, **value}.items()))

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES_BY_NAME[self.family]

    def batch_factor(self, batch: int) -> float:
        """Seconds of a call of `batch` images relative to one image."""
        points = list(self.batch.items())
        for (low, low_factor), (high, high_factor) in pairwise(points):
            if low <= batch <= high:
                return low_factor + (high_factor - low_factor) * (batch - low) / (high - low)
        largest, factor = points[-1]
        return factor * batch / largest

    def call_seconds(self, batch: int, width: int, height: int) -> tuple[float, float]:
        """(fixed overhead, seconds per step) of one call of `batch` images of width x height."""
        scale = self.batch_factor(batch) * (width * height) / (self.width * self.height)
        return self.overhead_seconds * scale, self.seconds_per_step * scale

    def scaled(self, time_scale: float) -> DeviceProfile:
        """Every duration times `time_scale` (the emulated device's `time_scale` setting)."""
        return self.model_copy(
            update={
                "seconds_per_step": self.seconds_per_step * time_scale,
                "overhead_seconds": self.overhead_seconds * time_scale,
                "load_seconds": self.load_seconds * time_scale,
            }
        )

    def to_toml(self, comment: str) -> str:
        """The profile as a file `load_profile` reads back (its name is the file's stem)."""
        lines = [f"# {line}" for line in comment.splitlines()]
        for key, value in self.model_dump(exclude={"name", "batch"}).items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines += ["", "[batch]", *(f"{size} = {factor!r}" for size, factor in self.batch.items())]
        return "\n".join(lines) + "\n"


def shipped_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> DeviceProfile:
    """A shipped profile by name, or any profile file (a recorded one) by path."""
    shipped = PROFILES_DIR / f"{name_or_path}.toml"
    path = shipped if shipped.is_file() else Path(name_or_path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ProfileError(
            f"profile {name_or_path!r}: not a shipped profile ({', '.join(shipped_profiles())}) "
            f"nor a readable file ({error.strerror})"
        ) from None
    try:
        return DeviceProfile(name=path.stem, **tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError, TypeError) as error:
        raise ProfileError(f"profile {path}: {error}") from None
