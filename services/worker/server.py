"""Start-up and shutdown of a worker process: load, warm up, then report SERVING."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from modm.logs import configure_logging, quiet_progress_bars
from modm.services.worker import metrics
from modm.services.worker.emulation import EmulatedRunner
from modm.services.worker.engine import WorkerEngine
from modm.services.worker.profile_recording import record_profile
from modm.services.worker.runner import Runner
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


def load_runner(settings: WorkerSettings) -> Runner:
    """Runs on the pipeline thread. Only a real device imports torch and diffusers."""
    if settings.device_profile is not None:
        return EmulatedRunner.load(
            settings.device_profile, time_scale=settings.time_scale, default_steps=settings.default_steps
        )
    from modm.services.worker.pipeline import load_diffusion_runner

    quiet_progress_bars()  # diffusers was first imported just now, after configure_logging
    return load_diffusion_runner(settings)


async def serve(
    settings: WorkerSettings,
    load: Callable[[WorkerSettings], Runner] = load_runner,
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
            if settings.profile_out is not None:
                await asyncio.get_running_loop().run_in_executor(
                    executor, record_profile, runner, profile, settings, settings.profile_out
                )
                log.info("profile recorded", extra={"path": str(settings.profile_out)})
        engine.start()
        servicer.attach(engine)
        await host.set_serving(True)
        metrics.READY.set(1)
        log.info("serving", extra={"port": host.port, "model": runner.facts.model_id, "role": settings.role})
        try:
            await host.run_until_stopped()
        finally:
            metrics.READY.set(0)
            await engine.close()


def main(settings: WorkerSettings) -> None:
    configure_logging("worker", settings.log_level, settings.log_format)  # also turns off loading bars
    asyncio.run(serve(settings))
