"""Turn a raw request into a `GenerationJob`, or say exactly which field is wrong."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import decode_image
from modm.params import MAX_SEED, RawParams, check_format, check_guidance, check_text
from modm.services.worker.jobs import GenerationJob, JobKind


@dataclass(frozen=True)
class RequestLimits:
    """The bounds a worker enforces: from its settings plus what its pipeline requires."""

    max_prompt_chars: int
    min_side: int
    max_side: int
    size_multiple: int
    default_width: int
    default_height: int
    default_steps: int
    max_steps: int
    default_guidance: float
    supports_negative_prompt: bool
    max_init_image_bytes: int
    max_init_image_pixels: int
    # The family's rule for how many steps an img2img call with (steps, strength) runs.
    img2img_steps: Callable[[int, float], int]


@dataclass(frozen=True)
class RawRequest:
    """A worker request as delivered: the generation params, plus the init image for img2img."""

    params: RawParams
    init_image: bytes | None = None
    strength: float | None = None


def _check_side(field: str, value: int, default: int, limits: RequestLimits) -> int:
    side = value or default
    if not limits.min_side <= side <= limits.max_side:
        raise InvalidArgument(field, f"{side} is outside [{limits.min_side}, {limits.max_side}]")
    if side % limits.size_multiple:
        raise InvalidArgument(field, f"{side} is not a multiple of {limits.size_multiple}")
    return side


def validate(raw: RawRequest, limits: RequestLimits, *, prefix: str = "params.") -> GenerationJob:
    """Validate every field; `prefix` names where the generation params sit in the message."""
    params = raw.params
    prompt = check_text(f"{prefix}prompt", params.prompt, limits.max_prompt_chars, required=True)
    negative = check_text(f"{prefix}negative_prompt", params.negative_prompt, limits.max_prompt_chars, required=False)
    if negative and not limits.supports_negative_prompt:
        raise InvalidArgument(f"{prefix}negative_prompt", "this model family has no negative guidance")
    width = _check_side(f"{prefix}width", params.width, limits.default_width, limits)
    height = _check_side(f"{prefix}height", params.height, limits.default_height, limits)
    steps = params.steps or limits.default_steps
    if not 1 <= steps <= limits.max_steps:
        raise InvalidArgument(f"{prefix}steps", f"{steps} is outside [1, {limits.max_steps}]")
    guidance = check_guidance(f"{prefix}guidance_scale", params.guidance_scale)
    guidance = limits.default_guidance if guidance is None else guidance
    output_format = check_format(f"{prefix}output_format", params.output_format)
    if params.seed is not None and not 0 <= params.seed <= MAX_SEED:
        raise InvalidArgument(f"{prefix}seed", f"{params.seed} is outside [0, 2^64 - 1]")
    seed = secrets.randbits(63) if params.seed is None else params.seed
    if raw.init_image is None:
        return GenerationJob(
            JobKind.TEXT_TO_IMAGE,
            prompt,
            negative or None,
            width,
            height,
            steps,
            guidance,
            seed,
            output_format,
            planned_steps=steps,
        )
    strength = raw.strength if raw.strength is not None else 0.0
    if not 0.0 < strength <= 1.0:
        raise InvalidArgument("strength", f"{strength} is outside (0, 1]")
    planned = limits.img2img_steps(steps, strength)
    if planned < 1:
        raise InvalidArgument("strength", f"{strength} runs no step of {steps}; raise strength or steps")
    image = decode_image(
        raw.init_image,
        field="init_image",
        max_bytes=limits.max_init_image_bytes,
        max_pixels=limits.max_init_image_pixels,
    )
    return GenerationJob(
        JobKind.IMAGE_TO_IMAGE,
        prompt,
        negative or None,
        width,
        height,
        steps,
        guidance,
        seed,
        output_format,
        planned_steps=planned,
        strength=strength,
        init_image=image,
    )
