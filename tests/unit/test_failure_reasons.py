"""The `modm-reason` trailer over real gRPC, in process: a service that raises OutOfMemory sends
FAILED_PRECONDITION with `modm-reason: OUT_OF_MEMORY` (abort_with, the one place); the router's
worker client reads it into WorkerFailure.reason, and the SDK raises OutOfMemoryError once,
without retrying."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc import aio

import modm
from modm.client import FailedPreconditionError, OutOfMemoryError
from modm.errors import OutOfMemory, PipelineError
from modm.grpc_errors import FailureReason
from modm.services.router.backends import GrpcWorker, WorkerFailure
from modm.serving import ServiceHost
from modm.settings import ServiceSettings
from modm.v1 import common_pb2, router_pb2, router_pb2_grpc, worker_pb2, worker_pb2_grpc

OOM = "out of memory generating 2048x2048 at batch 1 on cuda:0: CUDA out of memory"


class FailingWorker(worker_pb2_grpc.WorkerServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def TextToImageStream(
        self, request: worker_pb2.TextToImageRequest, context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.GenerateEvent]:
        raise self.error
        yield  # a generator, as the real stream handler is


class FailingRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> router_pb2.GenerateResponse:
        self.calls += 1
        raise self.error


async def host(add: object, servicer: object, name: str) -> ServiceHost:
    served = ServiceHost(ServiceSettings(port=0), [name], handle_signals=False)
    add(servicer, served.server)  # type: ignore[operator]
    await served.start()
    return served


@pytest.mark.parametrize(
    ("error", "reason"),
    [(OutOfMemory(OOM), FailureReason.OUT_OF_MEMORY), (PipelineError("the VAE failed"), FailureReason.PIPELINE_ERROR)],
)
async def test_the_router_reads_the_reason_a_worker_sends(error: Exception, reason: FailureReason) -> None:
    served = await host(worker_pb2_grpc.add_WorkerServicer_to_server, FailingWorker(error), "modm.v1.Worker")
    worker = GrpcWorker(f"127.0.0.1:{served.port}")
    try:
        with pytest.raises(WorkerFailure) as raised:
            await worker.generate(
                common_pb2.GenerationParams(prompt="p"), init_image=None, strength=1.0, timeout_s=10, on_event=None
            )
    finally:
        await worker.close()
        await served.server.stop(None)
    assert (raised.value.code, raised.value.reason, raised.value.details) == ("FAILED_PRECONDITION", reason, str(error))


async def test_the_sdk_raises_out_of_memory_once_without_retrying() -> None:
    router = FailingRouter(OutOfMemory(OOM))
    served = await host(router_pb2_grpc.add_RouterServicer_to_server, router, "modm.v1.Router")
    try:
        async with modm.AsyncClient(f"127.0.0.1:{served.port}", retries=3, backoff=0.01) as client:
            with pytest.raises(OutOfMemoryError, match="2048x2048 at batch 1") as raised:
                await client.generate("a lighthouse")
            assert isinstance(raised.value, FailedPreconditionError) and raised.value.code == "FAILED_PRECONDITION"
            router.error = PipelineError("the VAE failed")
            with pytest.raises(FailedPreconditionError) as plain:
                await client.generate("a lighthouse")
            assert not isinstance(plain.value, OutOfMemoryError)
    finally:
        await served.server.stop(None)
    assert router.calls == 2
