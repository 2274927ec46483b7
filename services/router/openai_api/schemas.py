"""The HTTP API's bodies: OpenAI's Images API shapes plus modm's extensions and metadata.

Unknown request fields are ignored rather than refused, because OpenAI clients send options
modm has no use for (`quality`, `style`, `background`, ...).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from modm.params import MAX_GUIDANCE
from modm.services.router.validation import MAX_SEED

SIZE_PATTERN = r"^(auto|\d{1,5}x\d{1,5})$"


class ResponseFormat(StrEnum):
    B64_JSON = "b64_json"
    URL = "url"


class OutputFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


class CacheMode(StrEnum):
    """default: reuse and insert; bypass: no reuse, output inserted; no_insert: reuse, output not
    inserted; off: neither."""

    DEFAULT = "default"
    BYPASS = "bypass"
    NO_INSERT = "no_insert"
    OFF = "off"


class ImageOptions(BaseModel):
    """What generations and edits share. None means 'the default'."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="What to draw.")
    model: str | None = Field(None, description="Ignored: the router picks the model of each request.")
    n: int | None = Field(None, ge=1, description="Images to make (run as separate requests); default 1.")
    size: str | None = Field(
        None, pattern=SIZE_PATTERN, description="WIDTHxHEIGHT, e.g. 512x512; 'auto' or unset: the model's default."
    )
    response_format: ResponseFormat | None = Field(None, description="Default b64_json.")
    output_format: OutputFormat | None = Field(None, description="Default png.")
    user: str | None = Field(None, description="The tenant whose cache entries are reused (1-64 of [A-Za-z0-9_.-]).")
    # --- modm extensions ---
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="With n > 1, image i uses seed + i.")
    negative_prompt: str | None = None
    guidance_scale: float | None = Field(None, ge=0, le=MAX_GUIDANCE)
    num_inference_steps: int | None = Field(None, ge=1, description="Up to the router's max_steps.")
    cache: CacheMode | None = Field(None, description="Default 'default'.")


class GenerationRequest(ImageOptions):
    """POST /v1/images/generations."""


class Timings(BaseModel):
    lookup_seconds: float
    embed_seconds: float
    search_seconds: float
    fetch_seconds: float
    queue_seconds: float
    generate_seconds: float
    total_seconds: float


class ModmMetadata(BaseModel):
    """How the router served one image: the gRPC GenerateResponse's serving metadata."""

    request_id: str
    tenant: str
    outcome: str = Field(description="exact_repeat, hit, miss or bypassed.")
    similarity: float = Field(description="Of the nearest cached prompt; -1 when the cache was not asked.")
    k: int = Field(description="Denoising steps skipped of total_steps by reusing a cached image (MoDM's k).")
    total_steps: int
    strength: float = Field(description="Share of the schedule run (1: from noise; 0: returned as cached).")
    source_entry_id: str
    cache_available: bool
    cache_note: str
    insert_scheduled: bool
    embedder: str
    pool: str = Field(description="large, small, or cache for an exact repeat.")
    model: str
    worker: str
    degraded: bool
    large_took_hit: bool
    attempts: int
    seed: int
    steps_run: int
    width: int
    height: int
    timings: Timings


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    modm: ModmMetadata


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: OutputFormat
    size: str


class Model(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "modm"
    pools: list[str] = Field(default_factory=list, description="modm: the pools serving this model now.")


class ModelList(BaseModel):
    object: str = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail
