"""OpenAI request bodies to engine requests, engine results to OpenAI response items: pure
functions, so the whole translation is unit-tested without a server."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.params import RawParams
from modm.services.router.engine import RouterResult
from modm.services.router.openai_api.schemas import (
    CacheMode,
    ImageData,
    ImageOptions,
    ModmMetadata,
    OutputFormat,
    ResponseFormat,
    Timings,
)
from modm.services.router.policy import CachePolicy
from modm.services.router.validation import MAX_SEED, RawGenerate

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")

CACHE_POLICY = {
    CacheMode.DEFAULT: CachePolicy.READ_WRITE,
    CacheMode.BYPASS: CachePolicy.BYPASS,
    CacheMode.NO_INSERT: CachePolicy.NO_STORE,
    CacheMode.OFF: CachePolicy.OFF,
}
MEDIA_TYPES = {ImageFormat.PNG: "image/png", ImageFormat.JPEG: "image/jpeg", ImageFormat.WEBP: "image/webp"}


@dataclass(frozen=True)
class ImageCall:
    """One images call as engine requests: `n` of them, identical but for the seed."""

    requests: list[RawGenerate]
    response_format: ResponseFormat
    output_format: OutputFormat


def parse_size(size: str | None) -> tuple[int, int]:
    """(0, 0) is 'the model's default'; the engine checks the range of anything else."""
    if size is None or size == "auto":
        return 0, 0
    match = SIZE.match(size)
    if match is None or int(match[1]) == 0 or int(match[2]) == 0:
        raise InvalidArgument("size", f"{size!r} is not WIDTHxHEIGHT (e.g. 512x512) or 'auto'")
    return int(match[1]), int(match[2])


def _text(param: str, value: str | None) -> str:
    """Text the gRPC messages can carry: JSON may hold lone surrogates, UTF-8 cannot."""
    text = value or ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(param, "is not valid Unicode text") from None
    return text


def to_requests(body: ImageOptions, max_images: int, *, random_seed: int | None = None) -> ImageCall:
    """The engine requests of one call. With n > 1 every image gets its own seed (seed + i, from a
    random base when none is given), so that n images differ even when the cache holds the prompt."""
    n = body.n or 1
    if n > max_images:
        raise InvalidArgument("n", f"{n} is more than the limit of {max_images}")
    width, height = parse_size(body.size)
    output_format = body.output_format or OutputFormat.PNG
    seed = body.seed
    if seed is not None and seed + n - 1 > MAX_SEED:
        raise InvalidArgument("seed", f"{seed} + n - 1 is more than 2^63 - 1")
    if seed is None and n > 1:
        seed = random_seed if random_seed is not None else secrets.randbelow(2**31)
    prompt = _text("prompt", body.prompt)
    negative = _text("negative_prompt", body.negative_prompt)
    tenant = _text("user", body.user)
    policy = CACHE_POLICY[body.cache or CacheMode.DEFAULT]
    requests = [
        RawGenerate(
            RawParams(
                prompt=prompt,
                negative_prompt=negative,
                width=width,
                height=height,
                steps=body.num_inference_steps or 0,
                guidance_scale=body.guidance_scale,
                seed=None if seed is None else seed + i,
                output_format=ImageFormat(output_format.value),
            ),
            tenant,
            policy,
        )
        for i in range(n)
    ]
    return ImageCall(requests, body.response_format or ResponseFormat.B64_JSON, output_format)


def metadata(result: RouterResult, cache_available: bool) -> ModmMetadata:
    plan, t = result.plan, result.timings
    return ModmMetadata(
        request_id=result.request_id,
        tenant=result.tenant,
        outcome=str(plan.outcome),
        similarity=plan.similarity,
        k=plan.skipped_steps,
        total_steps=plan.total_steps,
        strength=plan.strength,
        source_entry_id=plan.entry_id,
        cache_available=plan.cache_available and cache_available,
        cache_note=plan.note,
        insert_scheduled=result.insert_scheduled,
        embedder=result.embedder,
        pool=result.pool,
        model=result.model_id,
        worker=result.worker,
        degraded=result.degraded,
        large_took_hit=result.large_took_hit,
        attempts=result.attempts,
        seed=result.seed,
        steps_run=result.steps_run,
        width=result.width,
        height=result.height,
        timings=Timings(
            lookup_seconds=t.lookup,
            embed_seconds=t.embed,
            search_seconds=t.search,
            fetch_seconds=t.fetch,
            queue_seconds=t.queue,
            generate_seconds=t.generate,
            total_seconds=t.total,
        ),
    )


def image_data(result: RouterResult, cache_available: bool, url: str | None = None) -> ImageData:
    """One response item: the URL when given, else the bytes inline."""
    meta = metadata(result, cache_available)
    if url is not None:
        return ImageData(url=url, modm=meta)
    return ImageData(b64_json=base64.b64encode(result.image).decode("ascii"), modm=meta)


def size_of(results: list[RouterResult]) -> str:
    first = results[0]
    return f"{first.width}x{first.height}"
