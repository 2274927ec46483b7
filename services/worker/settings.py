"""Worker settings: which pipeline, on which device, and the limits it enforces."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from modm.settings import ServiceSettings

Role = Literal["large", "small"]
Dtype = Literal["auto", "fp32", "fp16", "bf16"]

_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_WORKER_", extra="forbid")

    port: int = Field(50061, ge=0, le=65535)
    model: str = Field(..., min_length=1, description="Hub id or local directory of a diffusers pipeline.")
    role: Role = "large"
    device: str = Field("cpu", description="cpu, cuda or cuda:N (ROCm devices are cuda in torch).")
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

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("device must be cpu, cuda or cuda:N")
        return value

    def torch_dtype_name(self) -> str:
        """fp32 on CPU whatever was asked: half precision on CPU is slow and lossy."""
        if self.device == "cpu":
            return "fp32"
        return "bf16" if self.dtype == "auto" else self.dtype
