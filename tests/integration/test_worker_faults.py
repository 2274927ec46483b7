"""A real worker on a tiny pipeline, armed with the test-only fault hook (`test_faults`): a request
the pipeline fails on fails alone, out of memory is the request's failure, and only a broken
pipeline takes the worker out of service. The model is a variant (fp16 file names) pinned with
a revision, which Info and every reply report."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from modm.grpc_errors import MODM_REASON_KEY, RETRY_AFTER_KEY
from modm.launch import ServiceProcess, free_port, health_status
from modm.services.worker.server import SERVICE_NAME
from modm.services.worker.tiny import MARKER_FILE
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.procs import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAMILY = "sd"
TIMEOUT = 120
FAULTS = json.dumps({"POISON": "error", "OOM-ME": "oom", "BREAK-ME": "break"})
SERVING = health_pb2.HealthCheckResponse.SERVING


def t2i(prompt: str, seed: int = 1) -> worker_pb2.TextToImageRequest:
    return worker_pb2.TextToImageRequest(params=common_pb2.GenerationParams(prompt=prompt, seed=seed, steps=2))


def failure(call: Callable[..., object], *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def refusal(stub: worker_pb2_grpc.WorkerStub, prompt: str) -> grpc.RpcError:
    return failure(lambda: stub.TextToImage(t2i(prompt), timeout=TIMEOUT))


def trailers(error: grpc.RpcError) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]


def batch_calls(metrics_port: int) -> tuple[float, float]:
    """(pipeline calls, calls of one request) from the worker's batch-size histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("modm_worker_batch_size_"))
    return float(values["modm_worker_batch_size_count"]), float(values['modm_worker_batch_size_bucket{le="1.0"}'])


@pytest.fixture(scope="module")
def fp16_model(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as the fp16 variant: it loads only when the worker asks for that variant."""
    from diffusers import DiffusionPipeline

    source = tiny_model(FAMILY)
    target = tmp_path_factory.mktemp("variant") / "tiny-sd-fp16"
    DiffusionPipeline.from_pretrained(source).save_pretrained(target, variant="fp16")
    shutil.copy(source / MARKER_FILE, target / MARKER_FILE)
    return target


@pytest.fixture(scope="module")
def faulty_worker(fp16_model: Path, log_dir: Path) -> Iterator[tuple[ServiceProcess, int]]:
    metrics_port = free_port()
    worker = start_worker(
        fp16_model,
        log_dir,
        revision="v1",
        variant="fp16",
        test_faults=FAULTS,
        unhealthy_after_failures=3,
        max_batch_size=4,
        batch_window_ms=1000,
        metrics_port=metrics_port,
        log_format="text",
    )
    try:
        worker.wait_serving()
        yield worker, metrics_port
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_info_and_replies_name_the_pinned_revision_and_variant(
    faulty_worker: tuple[ServiceProcess, int], fp16_model: Path
) -> None:
    worker, _ = faulty_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    info = stub.Info(worker_pb2.InfoRequest(), timeout=10)
    assert (info.revision, info.variant, info.model_id) == ("v1", "fp16", f"{fp16_model}@v1#fp16")
    assert stub.TextToImage(t2i("a red fox"), timeout=TIMEOUT).model_id == info.model_id


def test_a_poisoned_prompt_fails_alone_and_its_batch_mates_succeed(faulty_worker: tuple[ServiceProcess, int]) -> None:
    worker, metrics_port = faulty_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    calls_before, singles_before = batch_calls(metrics_port)
    prompts = ["a cat", "a dog", "a POISON fox", "an owl"]
    futures = [stub.TextToImage.future(t2i(prompt, seed=i), timeout=TIMEOUT) for i, prompt in enumerate(prompts)]
    good = [futures[i].result() for i in (0, 1, 3)]
    poisoned = failure(futures[2].result)
    calls, singles = batch_calls(metrics_port)
    assert calls - singles > calls_before - singles_before, "the four requests never shared a pipeline call"
    assert all(result.image for result in good)
    assert poisoned.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert poisoned.details().startswith("the pipeline failed generating 128x128 at batch 1 on cpu: RuntimeError")
    assert trailers(poisoned)[MODM_REASON_KEY] == "PIPELINE_ERROR"
    assert health_status(worker.address, SERVICE_NAME) == SERVING


def test_out_of_memory_is_the_requests_failure_and_the_worker_serves_on(
    faulty_worker: tuple[ServiceProcess, int],
) -> None:
    worker, _ = faulty_worker
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
    for _ in range(4):  # more than unhealthy_after_failures: memory is never the worker's fault
        error = refusal(stub, "a OOM-ME castle")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details().startswith("out of memory generating 128x128 at batch 1 on cpu: CUDA out of memory")
        assert trailers(error)[MODM_REASON_KEY] == "OUT_OF_MEMORY"
        assert RETRY_AFTER_KEY not in trailers(error)
    assert health_status(worker.address, SERVICE_NAME) == SERVING
    assert stub.TextToImage(t2i("a small castle"), timeout=TIMEOUT).image


def test_a_broken_pipeline_turns_the_worker_not_serving(fp16_model: Path, log_dir: Path) -> None:
    worker = start_worker(
        fp16_model, log_dir, variant="fp16", test_faults=FAULTS, unhealthy_after_failures=2, log_format="text"
    )
    try:
        worker.wait_serving()
        stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))
        for prompt in ("BREAK-ME", "a cat"):  # the break, then a healthy prompt failing too
            assert refusal(stub, prompt).code() == grpc.StatusCode.FAILED_PRECONDITION
        # The second failure made the worker test itself; the self-test failed too.
        for service in ("", SERVICE_NAME):
            assert health_status(worker.address, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        refused = refusal(stub, "a dog")
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.details().startswith("worker is broken: 2 pipeline calls in a row failed")
    finally:
        assert worker.stop() == 0, worker.log_tail()
