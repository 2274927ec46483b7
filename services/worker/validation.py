"""Turn a raw request into a `GenerationJob`, or say exactly which field is wrong."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import ImageFormat, decode_image
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
    """A request as the wire delivered it, before any checking. Zero/None mean 'default'."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None
    output_format: ImageFormat
    init_image: bytes | None = None
    strength: float | None = None


MAX_GUIDANCE = 50.0


def _check_text(field: str, text: str, limit: int, *, required: bool) -> str:
    stripped = text.strip()
    if required and not stripped:
        raise InvalidArgument(field, "must not be empty")
    if len(text) > limit:
        raise InvalidArgument(field, f"is {len(text)} characters, more than the limit of {limit}")
    if "\x00" in text:
        raise InvalidArgument(field, "must not contain NUL characters")
    return stripped


def _check_side(field: str, value: int, default: int, limits: RequestLimits) -> int:
    side = value or default
    if not limits.min_side <= side <= limits.max_side:
        raise InvalidArgument(field, f"{side} is outside [{limits.min_side}, {limits.max_side}]")
    if side % limits.size_multiple:
        raise InvalidArgument(field, f"{side} is not a multiple of {limits.size_multiple}")
    return side


def validate(raw: RawRequest, limits: RequestLimits, *, prefix: str = "params.") -> GenerationJob:
    """Validate every field; `prefix` names where the generation params sit in the message."""
    prompt = _check_text(f"{prefix}prompt", raw.prompt, limits.max_prompt_chars, required=True)
    negative = _check_text(f"{prefix}negative_prompt", raw.negative_prompt, limits.max_prompt_chars, required=False)
    if negative and not limits.supports_negative_prompt:
        raise InvalidArgument(f"{prefix}negative_prompt", "this model family has no negative guidance")
    width = _check_side(f"{prefix}width", raw.width, limits.default_width, limits)
    height = _check_side(f"{prefix}height", raw.height, limits.default_height, limits)
    steps = raw.steps or limits.default_steps
    if not 1 <= steps <= limits.max_steps:
        raise InvalidArgument(f"{prefix}steps", f"{steps} is outside [1, {limits.max_steps}]")
    guidance = limits.default_guidance if raw.guidance_scale is None else raw.guidance_scale
    if not 0.0 <= guidance <= MAX_GUIDANCE:  # also rejects NaN
        raise InvalidArgument(f"{prefix}guidance_scale", f"{guidance} is outside [0, {MAX_GUIDANCE:g}]")
    seed = secrets.randbits(63) if raw.seed is None else raw.seed
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
            raw.output_format,
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
        raw.output_format,
        planned_steps=planned,
        strength=strength,
        init_image=image,
    )
