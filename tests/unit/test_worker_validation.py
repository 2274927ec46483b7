from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.params import RawParams
from modm.services.worker.families import FAMILIES
from modm.services.worker.jobs import JobKind
from modm.services.worker.validation import RawRequest, RequestLimits, validate

LIMITS = RequestLimits(
    max_prompt_chars=100,
    min_side=64,
    max_side=1024,
    size_multiple=16,
    default_width=512,
    default_height=256,
    default_steps=28,
    max_steps=100,
    default_guidance=7.0,
    supports_negative_prompt=True,
    max_init_image_bytes=200_000,
    max_init_image_pixels=512 * 512,
    img2img_steps=FAMILIES["StableDiffusion3Pipeline"].img2img_steps,
)


def raw(**changes: object) -> RawRequest:
    fields: dict[str, object] = dict(
        prompt="a red fox",
        negative_prompt="",
        width=0,
        height=0,
        steps=0,
        guidance_scale=None,
        seed=7,
        output_format=ImageFormat.PNG,
    )
    fields.update(changes)
    request = {key: fields.pop(key) for key in ("init_image", "strength") if key in fields}
    return RawRequest(RawParams(**fields), **request)  # type: ignore[arg-type]


def png(width: int = 32, height: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def field_of(request: RawRequest, limits: RequestLimits = LIMITS) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate(request, limits)
    assert info.value.field in str(info.value)
    return info.value.field


def test_defaults_fill_unset_fields() -> None:
    job = validate(raw(), LIMITS)
    assert (job.kind, job.width, job.height, job.steps, job.guidance_scale, job.seed) == (
        JobKind.TEXT_TO_IMAGE,
        512,
        256,
        28,
        7.0,
        7,
    )
    assert job.negative_prompt is None
    assert job.prompt == "a red fox"


def test_unset_seed_is_chosen_and_reported() -> None:
    seeds = {validate(raw(seed=None), LIMITS).seed for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prompt": ""}, "params.prompt"),
        ({"prompt": "   \n\t"}, "params.prompt"),
        ({"prompt": "x" * 101}, "params.prompt"),
        ({"prompt": "nul\x00byte"}, "params.prompt"),
        ({"negative_prompt": "y" * 101}, "params.negative_prompt"),
        ({"width": 100}, "params.width"),
        ({"width": 32}, "params.width"),
        ({"height": 2048}, "params.height"),
        ({"steps": 101}, "params.steps"),
        ({"guidance_scale": -1.0}, "params.guidance_scale"),
        ({"guidance_scale": math.nan}, "params.guidance_scale"),
        ({"guidance_scale": math.inf}, "params.guidance_scale"),
        ({"output_format": None}, "params.output_format"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, object], field: str) -> None:
    assert field_of(raw(**changes)) == field


def test_negative_prompt_refused_where_family_has_no_guidance() -> None:
    limits = RequestLimits(**{**LIMITS.__dict__, "supports_negative_prompt": False})
    assert field_of(raw(negative_prompt="blurry"), limits) == "params.negative_prompt"
    assert validate(raw(), limits).negative_prompt is None


def test_image_to_image_checks_strength_and_image() -> None:
    job = validate(raw(init_image=png(), strength=0.4, steps=50), LIMITS)
    assert job.kind is JobKind.IMAGE_TO_IMAGE
    assert job.planned_steps == 20
    assert job.init_image is not None and job.init_image.mode == "RGB"
    for strength in (0.0, -0.5, 1.5, math.nan):
        assert field_of(raw(init_image=png(), strength=strength)) == "strength"
    flooring = RequestLimits(
        **{**LIMITS.__dict__, "img2img_steps": FAMILIES["StableDiffusionXLPipeline"].img2img_steps}
    )
    assert field_of(raw(init_image=png(), strength=0.05, steps=10), flooring) == "strength"
    assert validate(raw(init_image=png(), strength=0.05, steps=10), LIMITS).planned_steps == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", png()[:40], b"GIF89a" + b"\x00" * 30],
)
def test_undecodable_init_images_are_refused(data: bytes) -> None:
    assert field_of(raw(init_image=data, strength=0.5)) == "init_image"


def test_oversized_init_images_are_refused() -> None:
    assert field_of(raw(init_image=png(600, 600), strength=0.5)) == "init_image"  # pixels
    assert field_of(raw(init_image=b"\x89PNG" + b"\x00" * 300_000, strength=0.5)) == "init_image"  # bytes


@pytest.mark.parametrize(
    ("pipeline", "steps", "strength", "expected"),
    [
        ("StableDiffusion3Pipeline", 50, 0.4, 20),
        ("StableDiffusion3Pipeline", 28, 0.9, 26),
        ("FluxPipeline", 28, 0.9, 26),
        ("StableDiffusionXLPipeline", 50, 0.4, 20),
        ("StableDiffusionXLPipeline", 10, 0.3, 3),
        ("StableDiffusionPipeline", 28, 0.9, 25),
        ("StableDiffusionPipeline", 50, 1.0, 50),
    ],
)
def test_img2img_steps_follow_each_familys_rounding(pipeline: str, steps: int, strength: float, expected: int) -> None:
    assert FAMILIES[pipeline].img2img_steps(steps, strength) == expected
