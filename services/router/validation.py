"""Check a Generate request field by field; INVALID_ARGUMENT always names the field."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.services.router.policy import CachePolicy

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_GUIDANCE = 50.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    min_side: int
    max_side: int
    max_steps: int


@dataclass(frozen=True)
class RawGenerate:
    """A request as the wire delivered it; 0/None mean 'default'."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None
    output_format: ImageFormat | None  # None: a value this build does not know
    tenant: str
    cache_policy: CachePolicy | None  # None: a value this build does not know


@dataclass(frozen=True)
class GenerateJob:
    """A valid request. width/height 0 and steps 0 still mean 'the serving model's default'."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None
    output_format: ImageFormat
    tenant: str
    cache_policy: CachePolicy


def _text(field: str, text: str, limit: int, *, required: bool) -> str:
    stripped = text.strip()
    if required and not stripped:
        raise InvalidArgument(field, "must not be empty")
    if len(text) > limit:
        raise InvalidArgument(field, f"is {len(text)} characters, more than the limit of {limit}")
    if "\x00" in text:
        raise InvalidArgument(field, "must not contain NUL characters")
    return stripped


def _side(field: str, value: int, limits: Limits) -> int:
    if value and not limits.min_side <= value <= limits.max_side:
        raise InvalidArgument(field, f"{value} is outside [{limits.min_side}, {limits.max_side}]")
    return value


def validate(raw: RawGenerate, limits: Limits, default_tenant: str) -> GenerateJob:
    prompt = _text("params.prompt", raw.prompt, limits.max_prompt_chars, required=True)
    negative = _text("params.negative_prompt", raw.negative_prompt, limits.max_prompt_chars, required=False)
    width = _side("params.width", raw.width, limits)
    height = _side("params.height", raw.height, limits)
    if raw.steps > limits.max_steps:
        raise InvalidArgument("params.steps", f"{raw.steps} is more than {limits.max_steps}")
    guidance = raw.guidance_scale
    if guidance is not None and not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
        raise InvalidArgument("params.guidance_scale", f"{guidance} is outside [0, {MAX_GUIDANCE:g}]")
    if raw.seed is not None and not 0 <= raw.seed <= MAX_SEED:
        raise InvalidArgument("params.seed", f"{raw.seed} is outside [0, 2^63 - 1]")
    if raw.output_format is None:
        raise InvalidArgument("params.output_format", "is not a known image format")
    tenant = raw.tenant or default_tenant
    if not TENANT.match(tenant):
        raise InvalidArgument("tenant", "must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    if raw.cache_policy is None:
        raise InvalidArgument("cache_policy", "is not a known cache policy")
    return GenerateJob(
        prompt, negative, width, height, raw.steps, guidance, raw.seed, raw.output_format, tenant, raw.cache_policy
    )
