"""Start-up and shutdown of a worker process: load, warm up, then report SERVING."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from modm.logs import configure_logging
from modm.services.worker import metrics
from modm.services.worker.engine import WorkerEngine
from modm.services.worker.pipeline import DiffusionRunner
from modm.services.worker.servicer import WorkerServicer
from modm.services.worker.settings import WorkerSettings
from modm.serving import ServiceHost
from modm.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name


def pipeline_thread() -> ThreadPoolExecutor:
    """The one thread that loads the pipeline and runs every call of it.

    One thread, because a pipeline is not safe to call concurrently and batching replaces
    concurrency. The same thread that loaded it, because torch on CPU ran a tiny SD3 about
    twice as slowly from any other thread (benchmarks/worker_throughput.py showed it).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")


def load_runner(settings: WorkerSettings) -> DiffusionRunner:
    """Runs on the pipeline thread, so the thread budget applies where every call runs."""
    if settings.torch_threads is not None:
        # Workers sharing a host's cores must not each spin one thread per core: on 2 cores
        # two tiny pipelines ran 3x to 10x slower per step than either alone.
        torch.set_num_threads(settings.torch_threads)
    return DiffusionRunner.load(
        settings.model,
        device=settings.device,
        dtype=settings.torch_dtype_name(),
        default_steps=settings.default_steps,
        revision=settings.revision,
        variant=settings.variant,
        test_faults=settings.test_faults,
    )


async def serve(
    settings: WorkerSettings,
    load: Callable[[WorkerSettings], DiffusionRunner] = load_runner,
    host: ServiceHost | None = None,
) -> None:
    """Bind first (health answers NOT_SERVING while the weights load), then serve until SIGTERM.

    `load` and `host` are seams for tests that hold the load back or stop the server directly.
    """
    host = host or ServiceHost(settings, [SERVICE_NAME])
    servicer = WorkerServicer()
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, host.server)
    async with host:
        executor = pipeline_thread()
        runner = await asyncio.get_running_loop().run_in_executor(executor, load, settings)

        async def stop_serving() -> None:  # the engine found the pipeline broken
            metrics.READY.set(0)
            await host.set_serving(False)

        engine = WorkerEngine(runner, settings, executor, on_broken=stop_serving)
        if settings.warmup:
            profile = await engine.warm_up()
            log.info(
                "warmed up",
                extra={
                    "seconds_per_step": profile.seconds_per_step,
                    "overhead_seconds": profile.overhead_seconds,
                },
            )
        engine.start()
        servicer.attach(engine)
        await host.set_serving(True)
        metrics.READY.set(1)
        log.info("serving", extra={"port": host.port, "model": settings.model, "role": settings.role})
        try:
            await host.run_until_stopped()
        finally:
            metrics.READY.set(0)
            await engine.close()


def main(settings: WorkerSettings) -> None:
    configure_logging("worker", settings.log_level, settings.log_format)  # also turns off loading bars
    asyncio.run(serve(settings))
