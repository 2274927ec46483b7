"""Input checks for every cache request; each failure is an InvalidArgument naming the field.

Tenant ids are restricted to a small alphabet because they end up in vector-store filter
expressions and object keys: nothing a caller sends is ever quoted into either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.tenants import check_tenant as check_tenant  # the one tenant pattern, re-exported

ENTRY_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MODEL_ID_MAX = 256
METADATA_MAX_KEYS = 32
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 1024
# Milvus VARCHAR limits are in bytes; a prompt is stored as UTF-8.
PROMPT_MAX_BYTES = 16_384


@dataclass(frozen=True)
class RequestLimits:
    max_prompt_chars: int
    max_top_k: int
    max_image_bytes: int
    max_image_pixels: int


def check_entry_id(entry_id: str, field: str = "entry_id") -> str:
    if not ENTRY_ID_RE.match(entry_id):
        raise InvalidArgument(field, "must be 32 lowercase hex characters")
    return entry_id


def check_prompt(prompt: str, limits: RequestLimits, field: str = "prompt") -> str:
    stripped = prompt.strip()
    if not stripped:
        raise InvalidArgument(field, "must not be empty")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidArgument(field, f"is {len(prompt)} characters, more than the limit of {limits.max_prompt_chars}")
    if len(stripped.encode()) > PROMPT_MAX_BYTES:
        raise InvalidArgument(field, f"is more than {PROMPT_MAX_BYTES} bytes as UTF-8")
    if "\x00" in prompt:
        raise InvalidArgument(field, "must not contain NUL characters")
    return stripped


def check_top_k(top_k: int, limits: RequestLimits, field: str = "top_k") -> int:
    """0 means the default, 1."""
    top_k = top_k or 1
    if not 1 <= top_k <= limits.max_top_k:
        raise InvalidArgument(field, f"{top_k} is outside [1, {limits.max_top_k}]")
    return top_k


def check_embedding(values: Sequence[float], dim: int, field: str = "embedding") -> list[float]:
    if len(values) != dim:
        raise InvalidArgument(field, f"has {len(values)} dimensions, the embedder produces {dim}")
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(field, "contains NaN or infinity")
    largest = max((abs(v) for v in values), default=0.0)
    if largest == 0.0:
        raise InvalidArgument(field, "is the zero vector")
    scaled = [v / largest for v in values]  # squares of huge or subnormal values would overflow or vanish
    norm = math.hypot(*scaled)
    return [v / norm for v in scaled]


def check_model_id(model_id: str, field: str = "model_id") -> str:
    if not model_id.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(model_id) > MODEL_ID_MAX or "\x00" in model_id:
        raise InvalidArgument(field, f"must be at most {MODEL_ID_MAX} characters without NUL")
    return model_id.strip()


def check_metadata(metadata: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(metadata) > METADATA_MAX_KEYS:
        raise InvalidArgument(field, f"has {len(metadata)} keys, more than {METADATA_MAX_KEYS}")
    for key, value in metadata.items():
        if not key or len(key) > METADATA_KEY_MAX:
            raise InvalidArgument(f"{field}[{key!r}]", f"key must be 1-{METADATA_KEY_MAX} characters")
        if len(value) > METADATA_VALUE_MAX:
            raise InvalidArgument(f"{field}[{key!r}]", f"value is longer than {METADATA_VALUE_MAX} characters")
    return dict(metadata)
