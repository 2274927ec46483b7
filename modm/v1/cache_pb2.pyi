from modm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("tenant", "prompt", "embedding", "top_k", "params", "dry_run")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    prompt: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    params: _common_pb2.GenerationParams
    dry_run: bool
    def __init__(self, tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CacheEntry(_message.Message):
    __slots__ = ("entry_id", "tenant", "shared", "prompt", "model_id", "size_bytes", "width", "height", "created_at", "last_hit_at", "hit_count", "saved_steps", "metadata", "params")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HIT_AT_FIELD_NUMBER: _ClassVar[int]
    HIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAVED_STEPS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    tenant: str
    shared: bool
    prompt: str
    model_id: str
    size_bytes: int
    width: int
    height: int
    created_at: float
    last_hit_at: float
    hit_count: int
    saved_steps: int
    metadata: _containers.ScalarMap[str, str]
    params: _common_pb2.GenerationParams
    def __init__(self, entry_id: _Optional[str] = ..., tenant: _Optional[str] = ..., shared: _Optional[bool] = ..., prompt: _Optional[str] = ..., model_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., created_at: _Optional[float] = ..., last_hit_at: _Optional[float] = ..., hit_count: _Optional[int] = ..., saved_steps: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("entry", "similarity")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    entry: CacheEntry
    similarity: float
    def __init__(self, entry: _Optional[_Union[CacheEntry, _Mapping]] = ..., similarity: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("hit", "exact_repeat", "skipped_steps", "total_steps", "strength", "similarity", "entry_id")
    HIT_FIELD_NUMBER: _ClassVar[int]
    EXACT_REPEAT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    exact_repeat: bool
    skipped_steps: int
    total_steps: int
    strength: float
    similarity: float
    entry_id: str
    def __init__(self, hit: _Optional[bool] = ..., exact_repeat: _Optional[bool] = ..., skipped_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., strength: _Optional[float] = ..., similarity: _Optional[float] = ..., entry_id: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("matches", "decision", "embedder", "embed_seconds", "search_seconds")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    decision: Decision
    embedder: str
    embed_seconds: float
    search_seconds: float
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., embedder: _Optional[str] = ..., embed_seconds: _Optional[float] = ..., search_seconds: _Optional[float] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("tenant", "entry_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entry_id: str
    def __init__(self, tenant: _Optional[str] = ..., entry_id: _Optional[str] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("image", "entry")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    entry: CacheEntry
    def __init__(self, image: _Optional[bytes] = ..., entry: _Optional[_Union[CacheEntry, _Mapping]] = ...) -> None: ...

class InsertRequest(_message.Message):
    __slots__ = ("tenant", "prompt", "image", "model_id", "params", "metadata", "shared")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    prompt: str
    image: bytes
    model_id: str
    params: _common_pb2.GenerationParams
    metadata: _containers.ScalarMap[str, str]
    shared: bool
    def __init__(self, tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., image: _Optional[bytes] = ..., model_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., shared: _Optional[bool] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("entry_id", "evicted_ids")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    EVICTED_IDS_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    evicted_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entry_id: _Optional[str] = ..., evicted_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("tenant", "entry_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entry_id: str
    def __init__(self, tenant: _Optional[str] = ..., entry_id: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class TenantStats(_message.Message):
    __slots__ = ("tenant", "entries", "bytes", "hit_count", "saved_steps", "lookups", "lookup_hits", "exact_repeats", "inserts", "evictions")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAVED_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_HITS_FIELD_NUMBER: _ClassVar[int]
    EXACT_REPEATS_FIELD_NUMBER: _ClassVar[int]
    INSERTS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entries: int
    bytes: int
    hit_count: int
    saved_steps: int
    lookups: int
    lookup_hits: int
    exact_repeats: int
    inserts: int
    evictions: int
    def __init__(self, tenant: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., hit_count: _Optional[int] = ..., saved_steps: _Optional[int] = ..., lookups: _Optional[int] = ..., lookup_hits: _Optional[int] = ..., exact_repeats: _Optional[int] = ..., inserts: _Optional[int] = ..., evictions: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("total", "tenants", "embedder", "dimension", "eviction_policy", "max_entries", "max_bytes", "tenant_max_entries", "tenant_max_bytes", "ttl_seconds")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    EVICTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANT_MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TENANT_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    total: TenantStats
    tenants: _containers.RepeatedCompositeFieldContainer[TenantStats]
    embedder: str
    dimension: int
    eviction_policy: str
    max_entries: int
    max_bytes: int
    tenant_max_entries: int
    tenant_max_bytes: int
    ttl_seconds: float
    def __init__(self, total: _Optional[_Union[TenantStats, _Mapping]] = ..., tenants: _Optional[_Iterable[_Union[TenantStats, _Mapping]]] = ..., embedder: _Optional[str] = ..., dimension: _Optional[int] = ..., eviction_policy: _Optional[str] = ..., max_entries: _Optional[int] = ..., max_bytes: _Optional[int] = ..., tenant_max_entries: _Optional[int] = ..., tenant_max_bytes: _Optional[int] = ..., ttl_seconds: _Optional[float] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("grace_seconds",)
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: float
    def __init__(self, grace_seconds: _Optional[float] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("vectors_scanned", "objects_scanned", "stale_vectors_removed", "orphan_objects_removed", "expired_removed")
    VECTORS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    STALE_VECTORS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_OBJECTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_REMOVED_FIELD_NUMBER: _ClassVar[int]
    vectors_scanned: int
    objects_scanned: int
    stale_vectors_removed: int
    orphan_objects_removed: int
    expired_removed: int
    def __init__(self, vectors_scanned: _Optional[int] = ..., objects_scanned: _Optional[int] = ..., stale_vectors_removed: _Optional[int] = ..., orphan_objects_removed: _Optional[int] = ..., expired_removed: _Optional[int] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("tenant", "folder", "bucket_prefix", "bucket", "model_id", "shared", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    BUCKET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    folder: str
    bucket_prefix: str
    bucket: str
    model_id: str
    shared: bool
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., folder: _Optional[str] = ..., bucket_prefix: _Optional[str] = ..., bucket: _Optional[str] = ..., model_id: _Optional[str] = ..., shared: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ImportResponse(_message.Message):
    __slots__ = ("imported", "skipped", "errors", "entry_ids")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_IDS_FIELD_NUMBER: _ClassVar[int]
    imported: int
    skipped: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    entry_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, imported: _Optional[int] = ..., skipped: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ..., entry_ids: _Optional[_Iterable[str]] = ...) -> None: ...
