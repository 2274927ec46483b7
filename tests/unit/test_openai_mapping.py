"""OpenAI request bodies to engine requests and engine results to response items."""

from __future__ import annotations

import base64

import pytest

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.services.router.engine import RouterResult, Timings
from modm.services.router.openai_api.mapping import image_data, metadata, parse_size, to_requests
from modm.services.router.openai_api.schemas import GenerationRequest, ResponseFormat
from modm.services.router.policy import CachePolicy, Outcome, Plan


def result(**kw: object) -> RouterResult:
    fields: dict[str, object] = {
        "request_id": "abc",
        "tenant": "team-a",
        "image": b"\x89PNG-bytes",
        "output_format": ImageFormat.PNG,
        "width": 64,
        "height": 32,
        "seed": 9,
        "steps_run": 3,
        "plan": Plan(Outcome.HIT, similarity=0.91, skipped_steps=15, total_steps=50, strength=0.7, entry_id="e1"),
        "pool": "small",
        "model_id": "tiny-sdxl",
        "worker": "127.0.0.1:5",
        "attempts": 1,
        "embedder": "minilm",
        "timings": Timings(lookup=0.01, fetch=0.02, generate=0.5, total=0.6),
    }
    fields.update(kw)
    return RouterResult(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "expected"), [(None, (0, 0)), ("auto", (0, 0)), ("512x256", (512, 256)), ("64x64", (64, 64))]
)
def test_sizes(size: str | None, expected: tuple[int, int]) -> None:
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["512", "0x512", "512x0", "512X512", "-1x5", " 64x64", "1x123456", "axb"])
def test_bad_sizes_name_the_parameter(size: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_size(size)
    assert caught.value.field == "size"


def test_one_image_keeps_the_defaults_for_the_engine() -> None:
    call = to_requests(GenerationRequest(prompt="a cat"), max_images=4)
    (raw,) = call.requests
    assert call.response_format is ResponseFormat.B64_JSON and call.output_format == "png"
    assert raw.params.prompt == "a cat" and raw.params.width == 0 and raw.params.steps == 0
    assert raw.params.seed is None and raw.params.guidance_scale is None and raw.tenant == ""
    assert raw.cache_policy is CachePolicy.READ_WRITE and raw.params.output_format is ImageFormat.PNG


def test_extensions_reach_the_engine() -> None:
    body = GenerationRequest(
        prompt="a cat",
        size="128x64",
        user="team-a",
        seed=5,
        negative_prompt="blurry",
        guidance_scale=3.5,
        num_inference_steps=7,
        cache="no_insert",
        output_format="webp",
        response_format="url",
        quality="hd",  # an OpenAI option modm ignores
    )
    call = to_requests(body, max_images=4)
    (raw,) = call.requests
    params = raw.params
    assert (params.width, params.height, params.steps, params.seed) == (128, 64, 7, 5)
    assert params.negative_prompt == "blurry" and params.guidance_scale == 3.5
    assert params.output_format is ImageFormat.WEBP and raw.tenant == "team-a"
    assert raw.cache_policy is CachePolicy.NO_STORE and call.response_format is ResponseFormat.URL


@pytest.mark.parametrize(("mode", "policy"), [("bypass", CachePolicy.BYPASS), ("off", CachePolicy.OFF)])
def test_cache_modes(mode: str, policy: CachePolicy) -> None:
    (raw,) = to_requests(GenerationRequest(prompt="x", cache=mode), 1).requests
    assert raw.cache_policy is policy


def test_n_images_get_consecutive_seeds() -> None:
    call = to_requests(GenerationRequest(prompt="x", n=3, seed=10), max_images=4)
    assert [raw.params.seed for raw in call.requests] == [10, 11, 12]
    unseeded = to_requests(GenerationRequest(prompt="x", n=2), max_images=4, random_seed=100)
    assert [raw.params.seed for raw in unseeded.requests] == [100, 101]


def test_n_above_the_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_requests(GenerationRequest(prompt="x", n=5), max_images=4)
    assert caught.value.field == "n"


def test_seed_overflow_with_n_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_requests(GenerationRequest(prompt="x", n=2, seed=2**63 - 1), max_images=4)
    assert caught.value.field == "seed"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "user"])
def test_text_that_utf8_cannot_carry_is_refused(field: str) -> None:
    body = GenerationRequest(**{"prompt": "x", field: "bad \ud800 surrogate"})
    with pytest.raises(InvalidArgument) as caught:
        to_requests(body, max_images=1)
    assert caught.value.field == field


def test_metadata_carries_the_serving_report() -> None:
    meta = metadata(result(), cache_available=True)
    assert (meta.outcome, meta.k, meta.total_steps, meta.strength) == ("hit", 15, 50, 0.7)
    assert (meta.similarity, meta.source_entry_id, meta.pool, meta.model) == (0.91, "e1", "small", "tiny-sdxl")
    assert (meta.request_id, meta.tenant, meta.seed, meta.steps_run) == ("abc", "team-a", 9, 3)
    assert meta.timings.generate_seconds == 0.5 and meta.timings.total_seconds == 0.6
    assert meta.cache_available and not metadata(result(), cache_available=False).cache_available


def test_image_data_is_inline_or_a_url() -> None:
    inline = image_data(result(), True)
    assert base64.b64decode(inline.b64_json or "") == b"\x89PNG-bytes" and inline.url is None
    linked = image_data(result(), True, url="http://h/v1/images/files/x")
    assert linked.url == "http://h/v1/images/files/x" and linked.b64_json is None
