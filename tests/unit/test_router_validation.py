from __future__ import annotations

import math

import pytest

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.params import RawParams
from modm.services.router.policy import CachePolicy
from modm.services.router.validation import Limits, RawGenerate, validate

LIMITS = Limits(max_prompt_chars=50, min_side=64, max_side=1024, max_steps=100)


def raw(tenant: str = "", policy: CachePolicy | None = CachePolicy.READ_WRITE, **changes: object) -> RawGenerate:
    fields: dict[str, object] = dict(
        prompt="a red fox",
        negative_prompt="",
        width=0,
        height=0,
        steps=0,
        guidance_scale=None,
        seed=None,
        output_format=ImageFormat.PNG,
    )
    fields.update(changes)
    return RawGenerate(RawParams(**fields), tenant, policy)  # type: ignore[arg-type]


def test_defaults_stay_unresolved_and_tenant_defaults() -> None:
    job = validate(raw(), LIMITS, "public")
    assert (job.width, job.height, job.steps, job.guidance_scale, job.seed, job.tenant) == (
        0,
        0,
        0,
        None,
        None,
        "public",
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (raw(prompt=" "), "params.prompt"),
        (raw(prompt="x" * 51), "params.prompt"),
        (raw(negative_prompt="\x00"), "params.negative_prompt"),
        (raw(width=32), "params.width"),
        (raw(height=4096), "params.height"),
        (raw(steps=101), "params.steps"),
        (raw(guidance_scale=math.nan), "params.guidance_scale"),
        (raw(output_format=None), "params.output_format"),
        (raw(tenant="../etc"), "tenant"),
        (raw(tenant="x" * 65), "tenant"),
        (raw(policy=None), "cache_policy"),
    ],
)
def test_bad_fields_are_named(request_: RawGenerate, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(request_, LIMITS, "public")
    assert info.value.field == field
