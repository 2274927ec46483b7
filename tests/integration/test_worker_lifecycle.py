"""Batching, admission, bad input, readiness, draining and stopping of a real worker process,
on a tiny pipeline and on the emulated device (tests/worker_kinds.py): what does not look at
pixels runs on both."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from modm.grpc_errors import MODM_REASON_KEY, RETRY_AFTER_KEY
from modm.launch import ServiceProcess, free_port, health_status
from modm.services.worker.runner import Runner
from modm.services.worker.server import SERVICE_NAME, load_runner, serve
from modm.services.worker.settings import WorkerSettings
from modm.serving import ServiceHost
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.worker_kinds import FAMILY, KINDS, settings_of, start_worker_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 120


def t2i(**params: object) -> worker_pb2.TextToImageRequest:
    return worker_pb2.TextToImageRequest(params=common_pb2.GenerationParams(**params))  # type: ignore[arg-type]


def code_and_details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module", params=KINDS)
def batching_worker(
    request: pytest.FixtureRequest, tiny_model: Callable[[str], Path], log_dir: Path
) -> Iterator[tuple[ServiceProcess, int]]:
    metrics_port = free_port()
    worker = start_worker_of(
        request.param,
        tiny_model,
        log_dir,
        max_batch_size=4,
        batch_window_ms=300,
        metrics_port=metrics_port,
        max_queue=32,
        log_format="text",
        max_init_image_mb=1,
    )
    try:
        worker.wait_serving()
        yield worker, metrics_port
    finally:
        assert worker.stop() == 0, worker.log_tail()


def scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def concurrent_cats(stub: worker_pb2_grpc.WorkerStub) -> list[worker_pb2.GeneratedImage]:
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(lambda i: stub.TextToImage(t2i(prompt=f"cat {i}", seed=i, steps=2), timeout=TIMEOUT), range(8))
        )


def test_concurrent_requests_share_pipeline_calls(batching_worker: tuple[ServiceProcess, int]) -> None:
    worker, metrics_port = batching_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    batches_before = scrape(metrics_port, "modm_worker_batch_size_count")
    requests_before = scrape(metrics_port, 'modm_worker_requests_total{kind="text_to_image",outcome="OK"}')
    results = concurrent_cats(stub)
    batches = scrape(metrics_port, "modm_worker_batch_size_count") - batches_before
    assert sorted(r.seed for r in results) == list(range(8))
    assert max(r.batch_size for r in results) > 1
    assert batches < 8, f"8 concurrent requests ran as {batches} pipeline calls"
    assert scrape(metrics_port, 'modm_worker_requests_total{kind="text_to_image",outcome="OK"}') == requests_before + 8


@pytest.mark.parametrize("batching_worker", ["tiny"], indirect=True)
def test_a_batched_image_equals_the_same_request_alone(batching_worker: tuple[ServiceProcess, int]) -> None:
    worker, _ = batching_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    results = concurrent_cats(stub)
    assert len({r.image for r in results}) == 8
    batched = max(results, key=lambda r: r.batch_size)
    assert batched.batch_size > 1
    alone = stub.TextToImage(t2i(prompt=f"cat {batched.seed}", seed=batched.seed, steps=2), timeout=TIMEOUT)
    assert alone.batch_size == 1
    assert _pixels_close(batched.image, alone.image)


def _pixels_close(a: bytes, b: bytes, tolerance: int = 2) -> bool:
    from PIL import ImageChops

    diff = ImageChops.difference(Image.open(io.BytesIO(a)).convert("RGB"), Image.open(io.BytesIO(b)).convert("RGB"))
    return max(channel_max for _, channel_max in diff.getextrema()) <= tolerance


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (t2i(prompt=""), "params.prompt"),
        (t2i(prompt="x" * 2001), "params.prompt"),
        (t2i(prompt="ok", width=100), "params.width"),
        (t2i(prompt="ok", height=100_000), "params.height"),
        (t2i(prompt="ok", steps=151), "params.steps"),
        (t2i(prompt="ok", guidance_scale=-3), "params.guidance_scale"),
        (t2i(prompt="ok", guidance_scale=float("nan")), "params.guidance_scale"),
        (
            worker_pb2.ImageToImageRequest(
                params=common_pb2.GenerationParams(prompt="ok"), init_image=b"junk", strength=0.5
            ),
            "init_image",
        ),
        (
            worker_pb2.ImageToImageRequest(
                params=common_pb2.GenerationParams(prompt="ok"), init_image=b"\x89PNG\r\n", strength=0.5
            ),
            "init_image",
        ),
        (
            worker_pb2.ImageToImageRequest(
                params=common_pb2.GenerationParams(prompt="ok"), init_image=b"x" * 2_000_000, strength=0.5
            ),
            "init_image",
        ),
        (
            worker_pb2.ImageToImageRequest(params=common_pb2.GenerationParams(prompt="ok"), strength=0.5),
            "init_image",
        ),
        (
            worker_pb2.ImageToImageRequest(
                params=common_pb2.GenerationParams(prompt="ok"), init_image=b"x", strength=1.5
            ),
            "strength",
        ),
    ],
)
def test_bad_input_names_the_field(
    batching_worker: tuple[ServiceProcess, int], request_message: object, field: str
) -> None:
    worker, _ = batching_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    method = stub.ImageToImage if isinstance(request_message, worker_pb2.ImageToImageRequest) else stub.TextToImage
    code, details = code_and_details(lambda: method(request_message, timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":"), details
    assert health_status(worker.address) == health_pb2.HealthCheckResponse.SERVING


def test_oversized_message_is_refused_and_the_worker_lives(
    batching_worker: tuple[ServiceProcess, int],
) -> None:
    worker, _ = batching_worker
    stub = worker_pb2_grpc.WorkerStub(
        grpc.insecure_channel(worker.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    )
    huge = t2i(prompt="x" * (40 * 1024 * 1024))
    code, _ = code_and_details(lambda: stub.TextToImage(huge, timeout=TIMEOUT))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Info(worker_pb2.InfoRequest(), timeout=10).family == FAMILY


@pytest.mark.parametrize("kind", KINDS)
def test_full_queue_answers_resource_exhausted_with_retry_hint(
    kind: str, tiny_model: Callable[[str], Path], log_dir: Path
) -> None:
    worker = start_worker_of(
        kind, tiny_model, log_dir, max_batch_size=1, batch_window_ms=0, max_queue=1, log_format="text"
    )
    try:
        worker.wait_serving()
        stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
        calls = [stub.TextToImage.future(t2i(prompt=f"dog {i}", steps=30, seed=i), timeout=TIMEOUT) for i in range(6)]
        refused = []
        for call in calls:
            try:
                call.result()
            except grpc.RpcError as error:
                refused.append(error)
        assert refused, "six concurrent requests fit a queue of one"
        assert len(refused) < 6
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            hints = dict(error.trailing_metadata() or ())
            assert float(hints[RETRY_AFTER_KEY]) >= 1.0
            assert hints[MODM_REASON_KEY] == "QUEUE_FULL"
    finally:
        assert worker.stop() == 0, worker.log_tail()


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_drains_in_flight_requests(kind: str, tiny_model: Callable[[str], Path], log_dir: Path) -> None:
    worker = start_worker_of(
        kind,
        tiny_model,
        log_dir,
        emulated_time_scale=1.0,  # 60 steps sleep 2.1 s: both requests outlast the drain delay
        max_batch_size=1,
        batch_window_ms=0,
        grace_seconds=60,
        drain_delay_seconds=1,
        log_format="text",
    )
    worker.wait_serving()
    channel = grpc.insecure_channel(worker.address)
    stub = worker_pb2_grpc.WorkerStub(channel)
    streams = [stub.TextToImageStream(t2i(prompt=f"slow {i}", steps=60, seed=i), timeout=TIMEOUT) for i in range(2)]
    first_events = [next(stream) for stream in streams]  # both admitted
    assert all(event.HasField("queued") for event in first_events)
    worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while health_status(worker.address) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health never turned NOT_SERVING"
        time.sleep(0.05)
    results = [[event for event in stream if event.HasField("result")] for stream in streams]
    assert all(len(r) == 1 and r[0].result.steps_run == 60 for r in results)
    code, _ = code_and_details(lambda: stub.TextToImage(t2i(prompt="late"), timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert worker.proc.wait(60) == 0, worker.log_tail()


@pytest.mark.parametrize("kind", KINDS)
async def test_not_serving_and_unavailable_until_loaded(kind: str, tiny_model: Callable[[str], Path]) -> None:
    settings = settings_of(kind, tiny_model, port=free_port(), log_format="text")
    release = threading.Event()

    def held_load(s: WorkerSettings) -> Runner:
        release.wait(60)
        return load_runner(s)

    host = ServiceHost(settings, [SERVICE_NAME], handle_signals=False)
    server = asyncio.create_task(serve(settings, held_load, host))
    address = f"127.0.0.1:{settings.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = worker_pb2_grpc.WorkerStub(channel)
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        for _ in range(100):
            try:
                status = (await health.Check(request, timeout=2)).status
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Info(worker_pb2.InfoRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        release.set()
        for _ in range(600):
            if (await health.Check(request, timeout=2)).status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        info = await stub.Info(worker_pb2.InfoRequest(), timeout=5)
        assert info.seconds_per_step > 0 and info.load_seconds > 0
    host.request_stop()
    await asyncio.wait_for(server, 60)


def test_a_cancelled_stream_stops_its_call_at_the_next_step(batching_worker: tuple[ServiceProcess, int]) -> None:
    worker, metrics_port = batching_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    stopped_before = scrape(metrics_port, "modm_worker_stopped_calls_total")
    stream = stub.TextToImageStream(t2i(prompt="a long walk", seed=1, steps=150), timeout=TIMEOUT)
    while not next(stream).HasField("step"):
        pass
    stream.cancel()
    # One call at a time: once the next request is answered, the cancelled call has ended.
    assert stub.TextToImage(t2i(prompt="next", steps=1), timeout=TIMEOUT).steps_run == 1
    assert scrape(metrics_port, "modm_worker_stopped_calls_total") == stopped_before + 1


def test_a_deadline_stops_a_sleeping_call(tiny_model: Callable[[str], Path], log_dir: Path) -> None:
    metrics_port = free_port()
    # Unscaled SD1.5 on an A100: 150 steps sleep 5.3 s, far past the 1 s deadline.
    worker = start_worker_of(
        "emulated", tiny_model, log_dir, emulated_time_scale=1.0, batch_window_ms=0, metrics_port=metrics_port
    )
    try:
        worker.wait_serving()
        stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
        code, _ = code_and_details(lambda: stub.TextToImage(t2i(prompt="too slow", steps=150), timeout=1))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stub.TextToImage(t2i(prompt="next", steps=1), timeout=TIMEOUT).steps_run == 1
        assert scrape(metrics_port, "modm_worker_stopped_calls_total") == 1
        assert scrape(metrics_port, 'modm_worker_requests_total{kind="text_to_image",outcome="Cancelled"}') == 1
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_output_formats_and_reflection(batching_worker: tuple[ServiceProcess, int]) -> None:
    worker, _ = batching_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    for proto_format, pil_format in [
        (common_pb2.IMAGE_FORMAT_PNG, "PNG"),
        (common_pb2.IMAGE_FORMAT_WEBP, "WEBP"),
        (common_pb2.IMAGE_FORMAT_JPEG, "JPEG"),
    ]:
        result = stub.TextToImage(t2i(prompt="a boat", seed=1, steps=1, output_format=proto_format), timeout=TIMEOUT)
        assert Image.open(io.BytesIO(result.image)).format == pil_format and result.format == proto_format

    with grpc.insecure_channel(worker.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"modm.v1.Worker", "grpc.health.v1.Health"} <= names
