"""The worker's domain objects: a validated generation job and what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

from modm.images import ImageFormat


class JobKind(StrEnum):
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_IMAGE = "image_to_image"


@dataclass(frozen=True)
class GenerationJob:
    """A request that passed validation: every field is concrete and within the worker's limits."""

    kind: JobKind
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    output_format: ImageFormat
    # Steps the pipeline will actually run: `steps` for text-to-image, fewer for img2img.
    planned_steps: int
    strength: float = 1.0
    init_image: Image.Image | None = field(default=None, compare=False)

    def batch_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one pipeline call without changing each other's output.

        The pipeline takes one size, step count, guidance and strength per call; whether a
        negative prompt is present changes how some families encode the unconditional branch.
        """
        return (
            self.kind,
            self.width,
            self.height,
            self.steps,
            self.guidance_scale,
            self.strength,
            self.negative_prompt is not None,
        )


@dataclass(frozen=True)
class Timings:
    queue_seconds: float
    generate_seconds: float
    encode_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    output_format: ImageFormat
    width: int
    height: int
    seed: int
    steps_run: int
    batch_size: int
    model_id: str
    timings: Timings
