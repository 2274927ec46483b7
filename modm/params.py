"""The generation parameters every service receives, read off the wire and checked the same way.

Worker, router and cache all take a `modm.v1.GenerationParams`; reading and checking its fields
lives here once, so a field means, and is refused, the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.images import ImageFormat
from modm.v1 import common_pb2

MAX_GUIDANCE = 50.0
MAX_SEED = 2**64 - 1

FORMAT_FROM_PROTO = {
    common_pb2.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    common_pb2.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    common_pb2.IMAGE_FORMAT_WEBP: ImageFormat.WEBP,
    common_pb2.IMAGE_FORMAT_JPEG: ImageFormat.JPEG,
}
FORMAT_TO_PROTO = {
    ImageFormat.PNG: common_pb2.IMAGE_FORMAT_PNG,
    ImageFormat.WEBP: common_pb2.IMAGE_FORMAT_WEBP,
    ImageFormat.JPEG: common_pb2.IMAGE_FORMAT_JPEG,
}


@dataclass(frozen=True)
class RawParams:
    """GenerationParams as the wire delivered them, before any checking. 0/None mean 'default'."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None
    output_format: ImageFormat | None  # None: an enum value this build does not know


def read_params(message: common_pb2.GenerationParams) -> RawParams:
    return RawParams(
        prompt=message.prompt,
        negative_prompt=message.negative_prompt,
        width=message.width,
        height=message.height,
        steps=message.steps,
        guidance_scale=message.guidance_scale if message.HasField("guidance_scale") else None,
        seed=message.seed if message.HasField("seed") else None,
        output_format=FORMAT_FROM_PROTO.get(message.output_format),
    )


def check_text(field: str, text: str, limit: int, *, required: bool) -> str:
    """The text with surrounding blanks trimmed; refuses empty (if required), long or NUL text."""
    stripped = text.strip()
    if required and not stripped:
        raise InvalidArgument(field, "must not be empty")
    if len(text) > limit:
        raise InvalidArgument(field, f"is {len(text)} characters, more than the limit of {limit}")
    if "\x00" in text:
        raise InvalidArgument(field, "must not contain NUL characters")
    return stripped


def check_guidance(field: str, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= MAX_GUIDANCE):
        raise InvalidArgument(field, f"{value} is outside [0, {MAX_GUIDANCE:g}]")
    return value


def check_format(field: str, value: ImageFormat | None) -> ImageFormat:
    if value is None:
        raise InvalidArgument(field, "is not a known image format")
    return value


@dataclass(frozen=True)
class ParamsFingerprint:
    """What makes two generations the same: `key` covers everything but the seed."""

    key: str
    seed: str  # "" when the request left the seed to the worker

    def matches(self, stored_key: str, stored_seed: str) -> bool:
        """An exact repeat: same parameters, and the same seed if this request fixed one."""
        return bool(stored_key) and stored_key == self.key and (not self.seed or self.seed == stored_seed)


def fingerprint(
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float | None,
    seed: int | None,
) -> ParamsFingerprint:
    """Canonical fingerprint of generation parameters (prompt whitespace-trimmed).

    Zero/None fields mean "the model's default" and are compared as such: a request that leaves
    the size unset only repeats an entry inserted with the size unset too. The router should
    therefore pass the parameters it resolved, the same way for lookups and inserts.
    """
    canonical = json.dumps(
        {
            "prompt": prompt.strip(),
            "negative_prompt": negative_prompt.strip(),
            "width": width,
            "height": height,
            "steps": steps,
            "guidance_scale": None if guidance_scale is None else round(float(guidance_scale), 4),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return ParamsFingerprint(hashlib.sha256(canonical.encode()).hexdigest(), "" if seed is None else str(seed))
