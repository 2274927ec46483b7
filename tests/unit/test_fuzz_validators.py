"""Property-based tests of the pure validators every service runs on untrusted input.

The property everywhere: a hostile value is either accepted as something within the documented
bounds, or refused with InvalidArgument naming the field; never any other exception.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from modm.errors import InvalidArgument
from modm.images import ImageFormat, decode_image
from modm.params import RawParams, check_text, fingerprint, read_params
from modm.services.cache import validation as cache_validation
from modm.services.router.policy import CachePolicy
from modm.services.router.validation import Limits, RawGenerate
from modm.services.router.validation import validate as validate_generate
from modm.services.worker.families import FAMILIES
from modm.services.worker.validation import RawRequest, RequestLimits
from modm.services.worker.validation import validate as validate_worker
from modm.v1 import common_pb2
from tests.hostile import (
    MALFORMED_IMAGES,
    Tally,
    any_ints,
    float32s,
    float64s,
    fuzz_settings,
    hostile_images,
    hostile_text,
    mostly,
    text_up_to,
    uint64s,
)

TALLY = Tally("validators")
ROUTER_LIMITS = Limits(max_prompt_chars=200, min_side=32, max_side=2048, max_steps=150)
WORKER_LIMITS = RequestLimits(
    max_prompt_chars=200,
    min_side=64,
    max_side=1024,
    size_multiple=16,
    default_width=128,
    default_height=128,
    default_steps=4,
    max_steps=100,
    default_guidance=7.0,
    supports_negative_prompt=True,
    max_init_image_bytes=1 << 20,
    max_init_image_pixels=512 * 512,
    img2img_steps=FAMILIES["StableDiffusion3Pipeline"].img2img_steps,
)
CACHE_LIMITS = cache_validation.RequestLimits(
    max_prompt_chars=200, max_top_k=100, max_image_bytes=1 << 20, max_image_pixels=512 * 512
)
formats = st.one_of(st.none(), st.sampled_from(list(ImageFormat)))


raw_params = st.builds(
    RawParams,
    prompt=mostly(
        st.sampled_from(["a red fox", "  a lighthouse at dusk  ", "e\u0301t\u00e9 \U0001f600"]), text_up_to(200)
    ),
    negative_prompt=mostly(st.just(""), text_up_to(200)),
    width=mostly(st.sampled_from([0, 64, 128, 512]), any_ints),
    height=mostly(st.sampled_from([0, 64, 128, 512]), any_ints),
    steps=mostly(st.integers(0, 8), any_ints),
    guidance_scale=mostly(st.one_of(st.none(), st.floats(0, 50)), float64s),
    seed=mostly(st.one_of(st.none(), st.integers(0, 2**63 - 1)), any_ints),
    output_format=mostly(st.sampled_from(list(ImageFormat)), formats),
)
tenants = mostly(st.sampled_from(["", "acme", "Team-7.b_x"]), text_up_to(64))
policies = mostly(st.sampled_from(list(CachePolicy)), st.none())


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print("\n" + TALLY.report())


def outcome(target: str, fn: Callable[[], Any], fields: set[str] | None = None) -> Any:
    """Run one case: the result, or None when refused with InvalidArgument (naming a known field)."""
    try:
        result = fn()
    except InvalidArgument as refusal:
        assert refusal.field, refusal
        assert fields is None or refusal.field in fields, refusal
        assert "object at 0x" not in str(refusal), refusal  # messages are for people
        TALLY.count(target, "invalid_argument")
        return None
    TALLY.count(target, "accepted")
    return result


@given(text=text_up_to(100), required=st.booleans())
@fuzz_settings(2000)
def test_text_is_trimmed_bounded_and_nul_free(text: str, required: bool) -> None:
    kept = outcome("check_text", lambda: check_text("f", text, 100, required=required), {"f"})
    if kept is not None:
        assert kept == text.strip() and len(text) <= 100 and "\x00" not in kept
        assert kept or not required


@given(params=raw_params, tenant=tenants, policy=policies)
@fuzz_settings(3000)
def test_router_generate_request(params: RawParams, tenant: str, policy: CachePolicy | None) -> None:
    fields = {f"params.{name}" for name in RawParams.__dataclass_fields__} | {"tenant", "cache_policy"}
    job = outcome(
        "router.Generate",
        lambda: validate_generate(RawGenerate(params, tenant, policy), ROUTER_LIMITS, "default"),
        fields,
    )
    if job is None:
        return
    assert job.prompt and len(job.prompt) <= 200 and "\x00" not in job.prompt + job.negative_prompt
    for side in (job.width, job.height):
        assert side == 0 or 32 <= side <= 2048
    assert 0 <= job.steps <= 150
    assert job.guidance_scale is None or (math.isfinite(job.guidance_scale) and 0 <= job.guidance_scale <= 50)
    assert job.seed is None or 0 <= job.seed < 2**63
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", job.tenant)


@given(
    params=raw_params,
    image=mostly(st.none(), hostile_images),
    strength=mostly(st.floats(0.3, 1), float64s),
)
@fuzz_settings(800)
def test_worker_request(params: RawParams, image: bytes | None, strength: float | None) -> None:
    fields = {f"params.{name}" for name in RawParams.__dataclass_fields__} | {"strength", "init_image"}
    job = outcome(
        "worker.Generate/Img2Img", lambda: validate_worker(RawRequest(params, image, strength), WORKER_LIMITS), fields
    )
    if job is None:
        return
    assert 64 <= job.width <= 1024 and 64 <= job.height <= 1024 and job.width % 16 == job.height % 16 == 0
    assert 1 <= job.planned_steps <= job.steps <= 100
    assert math.isfinite(job.guidance_scale) and 0 <= job.guidance_scale <= 50
    # The engine hands the seed to torch.Generator.manual_seed, which takes [-(2^63), 2^64).
    assert 0 <= job.seed < 2**64, job.seed
    if image is not None:
        assert job.strength is not None and 0 < job.strength <= 1
        assert job.init_image.mode == "RGB" and job.init_image.width * job.init_image.height <= 512 * 512


@given(data=hostile_images, max_pixels=st.sampled_from([1, 64, 512 * 512, 4096 * 4096]))
@fuzz_settings(1000)
def test_decode_image_refuses_everything_but_bounded_png_jpeg_webp(data: bytes, max_pixels: int) -> None:
    image = outcome(
        "decode_image", lambda: decode_image(data, field="image", max_bytes=1 << 20, max_pixels=max_pixels), {"image"}
    )
    if image is not None:
        assert image.mode == "RGB" and 0 < image.width * image.height <= max_pixels


@pytest.mark.parametrize("name", sorted(MALFORMED_IMAGES))
def test_each_malformed_image_is_refused_by_name(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_image(MALFORMED_IMAGES[name], field="init_image", max_bytes=1 << 20, max_pixels=4096 * 4096)
    assert refused.value.field == "init_image" and "object at 0x" not in str(refused.value)
    TALLY.count("decode_image (named malformed)", "invalid_argument")


@given(tenant=text_up_to(64))
@fuzz_settings(3000)
def test_a_tenant_becomes_exactly_one_safe_key_segment(tenant: str) -> None:
    """What the cache accepts as a tenant is quoted nowhere: it is one object-key segment and a
    literal in vector-store filters, so it holds no separator, dot-segment, quote or control."""
    kept = outcome("cache tenant", lambda: cache_validation.check_tenant(tenant), {"tenant"})
    if kept is None:
        return
    entry_id = uuid.uuid4().hex
    key = f"entries/{kept}/{entry_id}"
    assert PurePosixPath(key).parts == ("entries", kept, entry_id)
    assert kept not in {".", ".."} and not set(kept) & set("/\\'\"` \t\r\n\x00%$")
    assert kept.isascii() and kept.isprintable()


@given(
    prompt=text_up_to(200),
    entry_id=hostile_text,
    top_k=any_ints,
    model_id=text_up_to(256),
    metadata=st.dictionaries(hostile_text, text_up_to(1024), max_size=40),
)
@fuzz_settings(2000)
def test_cache_request_fields(prompt: str, entry_id: str, top_k: int, model_id: str, metadata: dict[str, str]) -> None:
    kept = outcome("cache prompt", lambda: cache_validation.check_prompt(prompt, CACHE_LIMITS), {"prompt"})
    if kept is not None:
        assert kept and "\x00" not in kept and len(kept.encode()) <= cache_validation.PROMPT_MAX_BYTES
    if outcome("cache entry_id", lambda: cache_validation.check_entry_id(entry_id), {"entry_id"}) is not None:
        assert re.fullmatch(r"[0-9a-f]{32}", entry_id)
    k = outcome("cache top_k", lambda: cache_validation.check_top_k(top_k, CACHE_LIMITS), {"top_k"})
    assert k is None or 1 <= k <= 100
    m = outcome("cache model_id", lambda: cache_validation.check_model_id(model_id), {"model_id"})
    assert m is None or (m and "\x00" not in m and len(m) <= 256)
    kept_metadata = outcome("cache metadata", lambda: cache_validation.check_metadata(metadata))
    assert kept_metadata is None or len(kept_metadata) <= 32


@given(values=st.lists(float32s, min_size=0, max_size=8), dim=st.sampled_from([0, 1, 4, 8]))
@fuzz_settings(2000)
def test_embeddings_come_out_unit_length_or_are_refused(values: list[float], dim: int) -> None:
    vector = outcome("cache embedding", lambda: cache_validation.check_embedding(values, dim), {"embedding"})
    if vector is not None:
        assert len(vector) == dim and all(math.isfinite(v) for v in vector)
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("values", [[1e308, 1e308], [1e-320, 0.0], [5e-324, 5e-324, 5e-324]])
def test_extreme_but_finite_embeddings_normalise(values: list[float]) -> None:
    """Squares that overflow to inf or underflow to 0 must not turn a real direction into zeros."""
    vector = cache_validation.check_embedding(values, len(values))
    assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-9) and all(math.isfinite(v) for v in vector)


@given(
    prompt=hostile_text,
    negative=hostile_text,
    width=uint64s,
    height=uint64s,
    steps=uint64s,
    guidance=st.one_of(st.none(), float64s),
    seed=st.one_of(st.none(), uint64s),
)
@fuzz_settings(1000)
def test_fingerprints_are_total(
    prompt: str, negative: str, width: int, height: int, steps: int, guidance: float | None, seed: int | None
) -> None:
    fp = fingerprint(prompt, negative, width, height, steps, guidance, seed)
    assert re.fullmatch(r"[0-9a-f]{64}", fp.key)
    TALLY.count("fingerprint", "accepted")


@given(data=st.binary(max_size=512))
@fuzz_settings(2000)
def test_random_bytes_as_generation_params(data: bytes) -> None:
    """Whatever bytes arrive, protobuf refuses them or read_params gives typed values."""
    message = common_pb2.GenerationParams()
    try:
        message.ParseFromString(data)
    except DecodeError:
        TALLY.count("GenerationParams wire bytes", "decode_error")
        return
    raw = read_params(message)
    assert isinstance(raw.prompt, str) and 0 <= raw.width < 2**32 and 0 <= raw.steps < 2**32
    assert raw.seed is None or 0 <= raw.seed < 2**64
    TALLY.count("GenerationParams wire bytes", "parsed")
