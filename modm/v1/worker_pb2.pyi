from modm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_ROLE_UNSPECIFIED: _ClassVar[WorkerRole]
    WORKER_ROLE_LARGE: _ClassVar[WorkerRole]
    WORKER_ROLE_SMALL: _ClassVar[WorkerRole]
WORKER_ROLE_UNSPECIFIED: WorkerRole
WORKER_ROLE_LARGE: WorkerRole
WORKER_ROLE_SMALL: WorkerRole

class TextToImageRequest(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _common_pb2.GenerationParams
    def __init__(self, params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ...) -> None: ...

class ImageToImageRequest(_message.Message):
    __slots__ = ("params", "init_image", "strength")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    params: _common_pb2.GenerationParams
    init_image: bytes
    strength: float
    def __init__(self, params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., init_image: _Optional[bytes] = ..., strength: _Optional[float] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("image", "format", "width", "height", "seed", "steps_run", "batch_size", "model_id", "timings")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_RUN_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    format: _common_pb2.ImageFormat
    width: int
    height: int
    seed: int
    steps_run: int
    batch_size: int
    model_id: str
    timings: _common_pb2.Timings
    def __init__(self, image: _Optional[bytes] = ..., format: _Optional[_Union[_common_pb2.ImageFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., steps_run: _Optional[int] = ..., batch_size: _Optional[int] = ..., model_id: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class GenerationEvent(_message.Message):
    __slots__ = ("queued", "started", "step", "result")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    started: Started
    step: StepProgress
    result: GeneratedImage
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., step: _Optional[_Union[StepProgress, _Mapping]] = ..., result: _Optional[_Union[GeneratedImage, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("batch_size", "total_steps")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    total_steps: int
    def __init__(self, batch_size: _Optional[int] = ..., total_steps: _Optional[int] = ...) -> None: ...

class StepProgress(_message.Message):
    __slots__ = ("step", "total_steps")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("model_id", "family", "role", "device", "dtype", "max_batch_size", "default_width", "default_height", "default_steps", "size_multiple", "seconds_per_step", "queue_depth", "max_queue", "supports_negative_prompt", "overhead_seconds", "default_guidance_scale", "revision", "variant", "load_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STEPS_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    family: str
    role: WorkerRole
    device: str
    dtype: str
    max_batch_size: int
    default_width: int
    default_height: int
    default_steps: int
    size_multiple: int
    seconds_per_step: float
    queue_depth: int
    max_queue: int
    supports_negative_prompt: bool
    overhead_seconds: float
    default_guidance_scale: float
    revision: str
    variant: str
    load_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., family: _Optional[str] = ..., role: _Optional[_Union[WorkerRole, str]] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., default_width: _Optional[int] = ..., default_height: _Optional[int] = ..., default_steps: _Optional[int] = ..., size_multiple: _Optional[int] = ..., seconds_per_step: _Optional[float] = ..., queue_depth: _Optional[int] = ..., max_queue: _Optional[int] = ..., supports_negative_prompt: _Optional[bool] = ..., overhead_seconds: _Optional[float] = ..., default_guidance_scale: _Optional[float] = ..., revision: _Optional[str] = ..., variant: _Optional[str] = ..., load_seconds: _Optional[float] = ...) -> None: ...
