"""Check a Generate request field by field; INVALID_ARGUMENT always names the field."""

from __future__ import annotations

from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.params import RawParams, check_format, check_guidance, check_text
from modm.services.router.policy import CachePolicy
from modm.tenants import check_tenant

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

    params: RawParams
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


def _side(field: str, value: int, limits: Limits) -> int:
    if value and not limits.min_side <= value <= limits.max_side:
        raise InvalidArgument(field, f"{value} is outside [{limits.min_side}, {limits.max_side}]")
    return value


def validate(raw: RawGenerate, limits: Limits, default_tenant: str) -> GenerateJob:
    params = raw.params
    prompt = check_text("params.prompt", params.prompt, limits.max_prompt_chars, required=True)
    negative = check_text("params.negative_prompt", params.negative_prompt, limits.max_prompt_chars, required=False)
    width = _side("params.width", params.width, limits)
    height = _side("params.height", params.height, limits)
    if not 0 <= params.steps <= limits.max_steps:
        raise InvalidArgument("params.steps", f"{params.steps} is outside [0, {limits.max_steps}]")
    guidance = check_guidance("params.guidance_scale", params.guidance_scale)
    if params.seed is not None and not 0 <= params.seed <= MAX_SEED:
        raise InvalidArgument("params.seed", f"{params.seed} is outside [0, 2^63 - 1]")
    output_format = check_format("params.output_format", params.output_format)
    tenant = check_tenant(raw.tenant or default_tenant)
    if raw.cache_policy is None:
        raise InvalidArgument("cache_policy", "is not a known cache policy")
    return GenerateJob(
        prompt, negative, width, height, params.steps, guidance, params.seed, output_format, tenant, raw.cache_policy
    )
