from modm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CachePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_POLICY_UNSPECIFIED: _ClassVar[CachePolicy]
    CACHE_POLICY_READ_WRITE: _ClassVar[CachePolicy]
    CACHE_POLICY_BYPASS: _ClassVar[CachePolicy]
    CACHE_POLICY_NO_STORE: _ClassVar[CachePolicy]
    CACHE_POLICY_OFF: _ClassVar[CachePolicy]

class CacheOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_OUTCOME_UNSPECIFIED: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_EXACT_REPEAT: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_HIT: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_MISS: _ClassVar[CacheOutcome]
    CACHE_OUTCOME_BYPASSED: _ClassVar[CacheOutcome]
CACHE_POLICY_UNSPECIFIED: CachePolicy
CACHE_POLICY_READ_WRITE: CachePolicy
CACHE_POLICY_BYPASS: CachePolicy
CACHE_POLICY_NO_STORE: CachePolicy
CACHE_POLICY_OFF: CachePolicy
CACHE_OUTCOME_UNSPECIFIED: CacheOutcome
CACHE_OUTCOME_EXACT_REPEAT: CacheOutcome
CACHE_OUTCOME_HIT: CacheOutcome
CACHE_OUTCOME_MISS: CacheOutcome
CACHE_OUTCOME_BYPASSED: CacheOutcome

class GenerateRequest(_message.Message):
    __slots__ = ("params", "tenant", "cache_policy")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CACHE_POLICY_FIELD_NUMBER: _ClassVar[int]
    params: _common_pb2.GenerationParams
    tenant: str
    cache_policy: CachePolicy
    def __init__(self, params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., tenant: _Optional[str] = ..., cache_policy: _Optional[_Union[CachePolicy, str]] = ...) -> None: ...

class CacheReport(_message.Message):
    __slots__ = ("outcome", "similarity", "skipped_steps", "total_steps", "strength", "source_entry_id", "cache_available", "cache_note", "insert_scheduled", "embedder")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CACHE_NOTE_FIELD_NUMBER: _ClassVar[int]
    INSERT_SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    outcome: CacheOutcome
    similarity: float
    skipped_steps: int
    total_steps: int
    strength: float
    source_entry_id: str
    cache_available: bool
    cache_note: str
    insert_scheduled: bool
    embedder: str
    def __init__(self, outcome: _Optional[_Union[CacheOutcome, str]] = ..., similarity: _Optional[float] = ..., skipped_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., strength: _Optional[float] = ..., source_entry_id: _Optional[str] = ..., cache_available: _Optional[bool] = ..., cache_note: _Optional[str] = ..., insert_scheduled: _Optional[bool] = ..., embedder: _Optional[str] = ...) -> None: ...

class ServedBy(_message.Message):
    __slots__ = ("pool", "model_id", "worker", "degraded", "large_took_hit", "attempts")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    LARGE_TOOK_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    model_id: str
    worker: str
    degraded: bool
    large_took_hit: bool
    attempts: int
    def __init__(self, pool: _Optional[str] = ..., model_id: _Optional[str] = ..., worker: _Optional[str] = ..., degraded: _Optional[bool] = ..., large_took_hit: _Optional[bool] = ..., attempts: _Optional[int] = ...) -> None: ...

class RouterTimings(_message.Message):
    __slots__ = ("lookup_seconds", "embed_seconds", "search_seconds", "fetch_seconds", "queue_seconds", "generate_seconds", "total_seconds")
    LOOKUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EMBED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FETCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lookup_seconds: float
    embed_seconds: float
    search_seconds: float
    fetch_seconds: float
    queue_seconds: float
    generate_seconds: float
    total_seconds: float
    def __init__(self, lookup_seconds: _Optional[float] = ..., embed_seconds: _Optional[float] = ..., search_seconds: _Optional[float] = ..., fetch_seconds: _Optional[float] = ..., queue_seconds: _Optional[float] = ..., generate_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "image", "format", "width", "height", "seed", "steps_run", "served_by", "cache", "timings", "tenant")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_RUN_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: bytes
    format: _common_pb2.ImageFormat
    width: int
    height: int
    seed: int
    steps_run: int
    served_by: ServedBy
    cache: CacheReport
    timings: RouterTimings
    tenant: str
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[bytes] = ..., format: _Optional[_Union[_common_pb2.ImageFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., steps_run: _Optional[int] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., cache: _Optional[_Union[CacheReport, _Mapping]] = ..., timings: _Optional[_Union[RouterTimings, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("queued", "started", "step", "result")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    queued: RequestQueued
    started: RequestStarted
    step: RequestStep
    result: GenerateResponse
    def __init__(self, queued: _Optional[_Union[RequestQueued, _Mapping]] = ..., started: _Optional[_Union[RequestStarted, _Mapping]] = ..., step: _Optional[_Union[RequestStep, _Mapping]] = ..., result: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class RequestQueued(_message.Message):
    __slots__ = ("request_id", "pool", "outcome", "position", "attempt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    pool: str
    outcome: CacheOutcome
    position: int
    attempt: int
    def __init__(self, request_id: _Optional[str] = ..., pool: _Optional[str] = ..., outcome: _Optional[_Union[CacheOutcome, str]] = ..., position: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class RequestStarted(_message.Message):
    __slots__ = ("worker", "total_steps", "batch_size", "attempt")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    worker: str
    total_steps: int
    batch_size: int
    attempt: int
    def __init__(self, worker: _Optional[str] = ..., total_steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class RequestStep(_message.Message):
    __slots__ = ("step", "total_steps")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ...) -> None: ...

class RouterStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("pool", "workers", "queue_depth", "in_flight", "capacity", "outstanding_seconds")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    workers: int
    queue_depth: int
    in_flight: int
    capacity: int
    outstanding_seconds: float
    def __init__(self, pool: _Optional[str] = ..., workers: _Optional[int] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., capacity: _Optional[int] = ..., outstanding_seconds: _Optional[float] = ...) -> None: ...

class WorkerStats(_message.Message):
    __slots__ = ("address", "pool", "model_id", "family", "healthy", "in_flight", "capacity", "profiled_seconds_per_step", "profiled_overhead_seconds", "completed", "mean_service_seconds", "mean_seconds_per_step", "failures", "ejected", "default_steps", "load_seconds")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PROFILED_SECONDS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    PROFILED_OVERHEAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    MEAN_SERVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    address: str
    pool: str
    model_id: str
    family: str
    healthy: bool
    in_flight: int
    capacity: int
    profiled_seconds_per_step: float
    profiled_overhead_seconds: float
    completed: int
    mean_service_seconds: float
    mean_seconds_per_step: float
    failures: int
    ejected: bool
    default_steps: int
    load_seconds: float
    def __init__(self, address: _Optional[str] = ..., pool: _Optional[str] = ..., model_id: _Optional[str] = ..., family: _Optional[str] = ..., healthy: _Optional[bool] = ..., in_flight: _Optional[int] = ..., capacity: _Optional[int] = ..., profiled_seconds_per_step: _Optional[float] = ..., profiled_overhead_seconds: _Optional[float] = ..., completed: _Optional[int] = ..., mean_service_seconds: _Optional[float] = ..., mean_seconds_per_step: _Optional[float] = ..., failures: _Optional[int] = ..., ejected: _Optional[bool] = ..., default_steps: _Optional[int] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class RouterStats(_message.Message):
    __slots__ = ("window_seconds", "requests", "request_rate_per_min", "hit_rate", "exact_repeat_rate", "k_distribution", "kappa", "outcomes", "degraded", "retries", "pools", "workers", "cache_available", "degrade_override", "inserts_pending")
    class KDistributionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_PER_MIN_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    EXACT_REPEAT_RATE_FIELD_NUMBER: _ClassVar[int]
    K_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    KAPPA_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    CACHE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEGRADE_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    INSERTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    requests: int
    request_rate_per_min: float
    hit_rate: float
    exact_repeat_rate: float
    k_distribution: _containers.ScalarMap[int, float]
    kappa: float
    outcomes: _containers.ScalarMap[str, int]
    degraded: int
    retries: int
    pools: _containers.RepeatedCompositeFieldContainer[PoolStats]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStats]
    cache_available: bool
    degrade_override: DegradeState
    inserts_pending: int
    def __init__(self, window_seconds: _Optional[float] = ..., requests: _Optional[int] = ..., request_rate_per_min: _Optional[float] = ..., hit_rate: _Optional[float] = ..., exact_repeat_rate: _Optional[float] = ..., k_distribution: _Optional[_Mapping[int, float]] = ..., kappa: _Optional[float] = ..., outcomes: _Optional[_Mapping[str, int]] = ..., degraded: _Optional[int] = ..., retries: _Optional[int] = ..., pools: _Optional[_Iterable[_Union[PoolStats, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[WorkerStats, _Mapping]]] = ..., cache_available: _Optional[bool] = ..., degrade_override: _Optional[_Union[DegradeState, _Mapping]] = ..., inserts_pending: _Optional[int] = ...) -> None: ...

class SetDegradeRequest(_message.Message):
    __slots__ = ("degrade_misses", "reason", "ttl_seconds", "source")
    DEGRADE_MISSES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    degrade_misses: bool
    reason: str
    ttl_seconds: float
    source: str
    def __init__(self, degrade_misses: _Optional[bool] = ..., reason: _Optional[str] = ..., ttl_seconds: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class DegradeState(_message.Message):
    __slots__ = ("degrade_misses", "reason", "source", "expires_in_seconds", "allowed")
    DEGRADE_MISSES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    degrade_misses: bool
    reason: str
    source: str
    expires_in_seconds: float
    allowed: bool
    def __init__(self, degrade_misses: _Optional[bool] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., expires_in_seconds: _Optional[float] = ..., allowed: _Optional[bool] = ...) -> None: ...
