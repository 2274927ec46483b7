"""What a failed pipeline call means for its requests: out of memory for their size and batch, or
an input the model could not take. Both are the request's failure, not the worker's.

Torch is only looked at in a process that loaded it: an emulated worker never does, and nothing
it runs can raise torch's errors or hold CUDA memory."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from modm.errors import FailedPrecondition, OutOfMemory, PipelineError
from modm.services.worker.jobs import GenerationJob

# How allocators without torch.OutOfMemoryError say it: ROCm/HIP and others ("HIP out of memory"),
# torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory").
_OUT_OF_MEMORY_PHRASES = ("out of memory", "can't allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), or a RuntimeError saying so."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(phrase in message for phrase in _OUT_OF_MEMORY_PHRASES)


def pipeline_failure(error: Exception, jobs: Sequence[GenerationJob], device: str) -> FailedPrecondition:
    """The domain error for a failed call: its message names the size, batch and device, and the
    first line of the pipeline's own message. It keeps no reference to `error`, whose traceback
    holds the call's tensors."""
    first = jobs[0]
    call = f"generating {first.width}x{first.height} at batch {len(jobs)} on {device}"
    lines = str(error).strip().splitlines()
    detail = lines[0] if lines else type(error).__name__
    if is_out_of_memory(error):
        return OutOfMemory(f"out of memory {call}: {detail}")
    return PipelineError(f"the pipeline failed {call}: {type(error).__name__}: {detail}")


def free_memory(device: str) -> None:
    """Give back what a failed call left allocated, so the next request starts from a clean slate."""
    gc.collect()
    if device.startswith("cuda"):
        import torch  # a CUDA device's runner has loaded it

        torch.cuda.empty_cache()
