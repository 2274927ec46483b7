"""Worker settings: which pipeline, on which device, and the limits it enforces."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from modm.services.worker.device_profile import DeviceProfile, load_profile
from modm.settings import ServiceSettings

Role = Literal["large", "small"]
Dtype = Literal["auto", "fp32", "fp16", "bf16"]
FaultKind = Literal["error", "oom", "break"]  # the test-only hook's faults (tiny/faults.py)

EMULATED = "emulated"
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|emulated)$")
# Hub revisions (branch, tag, commit) and weight variants; '@' and '#' separate them in the model id.
_REVISION = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
_VARIANT = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_WORKER_", extra="forbid")

    port: int = Field(50061, ge=0, le=65535)
    model: str = Field("", description="Hub id or local directory of a diffusers pipeline (every device but emulated).")
    revision: str | None = Field(
        None, max_length=128, pattern=_REVISION, description="Hub revision to load: a branch, tag or commit hash."
    )
    variant: str | None = Field(
        None, max_length=32, pattern=_VARIANT, description="Weights variant to load, e.g. fp16 (*.fp16.safetensors)."
    )
    role: Role = "large"
    device: str = Field(
        "cpu", description="cpu, cuda or cuda:N (ROCm devices are cuda in torch), or emulated (sleeps by a profile)."
    )
    profile: str | None = Field(
        None, description="Emulated device: a shipped profile's name or a profile file (TOML); it sets the role."
    )
    time_scale: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="Emulated device: multiplies every emulated duration (load, overhead, steps); 0 answers at "
        "once, so what is measured is the serving system alone.",
    )
    profile_out: Path | None = Field(
        None, description="Write this worker's measured profile here (TOML) after warm-up, before serving."
    )
    dtype: Dtype = Field("auto", description="auto = bf16 on GPUs; CPU always runs fp32.")
    max_batch_size: int = Field(4, ge=1, le=64)
    batch_window_ms: float = Field(10.0, ge=0, le=5000)
    max_queue: int = Field(64, ge=1, le=10_000, description="Requests waiting beyond this are refused.")
    max_prompt_chars: int = Field(2000, ge=1, le=100_000)
    min_side: int = Field(32, ge=8)
    max_side: int = Field(2048, ge=8)
    max_steps: int = Field(150, ge=1, le=1000)
    max_init_image_mb: float = Field(20.0, gt=0)
    max_init_image_pixels: int = Field(4096 * 4096, ge=1)
    default_steps: int | None = Field(None, ge=1, description="Overrides the family's default step count.")
    warmup: bool = Field(True, description="Run one generation before reporting SERVING.")
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="Threads torch may run on the CPU (default: all cores)."
    )
    unhealthy_after_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Pipeline calls failing in a row (out of memory aside) after which the worker tests "
        "itself; NOT_SERVING if that fails too.",
    )
    test_faults: dict[str, FaultKind] = Field(
        default_factory=dict,
        description="Test only, tiny models only: prompt marker -> error, oom or break (tiny/faults.py).",
    )

    _device_profile: DeviceProfile | None = PrivateAttr(None)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("device must be cpu, cuda, cuda:N or emulated")
        return value

    @model_validator(mode="after")
    def _a_model_or_a_profile(self) -> Self:
        """A real device loads a model; the emulated one reads its profile here, once."""
        if self.profile_out is not None and not self.warmup:
            raise ValueError("profile_out records the warm-up's timings: it needs warmup")
        if self.device != EMULATED:
            if not self.model:
                raise ValueError("model is required (or device emulated with a profile)")
            if self.profile is not None or "time_scale" in self.model_fields_set:
                raise ValueError("profile and time_scale are for the emulated device")
            return self
        given = [name for name in ("model", "revision", "variant", "test_faults") if getattr(self, name)]
        if given:
            raise ValueError(f"an emulated device serves its profile, not a model: unset {', '.join(given)}")
        if self.profile is None:
            raise ValueError("an emulated device needs a profile: a shipped profile's name or a profile file")
        self._device_profile = load_profile(self.profile)
        if "role" not in self.model_fields_set:
            self.role = self._device_profile.role
        return self

    @property
    def device_profile(self) -> DeviceProfile | None:
        """The emulated device's profile; None on a real device."""
        return self._device_profile

    @field_validator("test_faults")
    @classmethod
    def _markers_not_empty(cls, value: dict[str, FaultKind]) -> dict[str, FaultKind]:
        if "" in value:
            raise ValueError("an empty marker would match every prompt")
        return value

    def torch_dtype_name(self) -> str:
        """fp32 on CPU whatever was asked: half precision on CPU is slow and lossy."""
        if self.device == "cpu":
            return "fp32"
        return "bf16" if self.dtype == "auto" else self.dtype
