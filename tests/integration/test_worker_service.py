"""A real worker process per tiny family, driven through the generated stubs."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from modm.launch import ServiceProcess, health_status
from modm.services.worker.families import FAMILIES
from modm.services.worker.tiny import TINY_FAMILIES
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.procs import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC_BY_NAME = {spec.name: spec for spec in FAMILIES.values()}
TIMEOUT = 120


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family_worker(
    request: pytest.FixtureRequest, tiny_model: Callable[[str], Path], log_dir: Path
) -> Iterator[tuple[str, ServiceProcess]]:
    family = request.param
    worker = start_worker(tiny_model(family), log_dir, role="small", log_format="text")
    try:
        worker.wait_serving()
        yield family, worker
    finally:
        assert worker.stop() == 0, worker.log_tail()


def stub_for(worker: ServiceProcess) -> worker_pb2_grpc.WorkerStub:
    return worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))


def decode(result: worker_pb2.GeneratedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.image))
    image.load()
    return image


def t2i(**params: object) -> worker_pb2.TextToImageRequest:
    return worker_pb2.TextToImageRequest(params=common_pb2.GenerationParams(**params))  # type: ignore[arg-type]


def test_every_family_serves_every_rpc(family_worker: tuple[str, ServiceProcess]) -> None:
    family, worker = family_worker
    spec = SPEC_BY_NAME[family]
    stub = stub_for(worker)
    assert health_status(worker.address, "modm.v1.Worker") == health_pb2.HealthCheckResponse.SERVING

    info = stub.Info(worker_pb2.InfoRequest(), timeout=10)
    assert (info.family, info.role, info.device, info.dtype) == (
        family,
        worker_pb2.WORKER_ROLE_SMALL,
        "cpu",
        "fp32",
    )
    assert info.seconds_per_step > 0 and info.default_width % info.size_multiple == 0
    assert info.supports_negative_prompt == spec.supports_negative_prompt

    # Default size, and an explicit non-square size.
    default = stub.TextToImage(t2i(prompt="a red fox in snow", seed=3, steps=2), timeout=TIMEOUT)
    assert decode(default).size == (info.default_width, info.default_height)
    assert default.seed == 3 and default.steps_run == 2 and default.batch_size == 1
    width, height = info.default_width + info.size_multiple, info.default_width
    sized = stub.TextToImage(t2i(prompt="a red fox", seed=1, steps=2, width=width, height=height), timeout=TIMEOUT)
    assert decode(sized).size == (width, height) == (sized.width, sized.height)

    # Determinism for a fixed seed; a different seed gives a different image.
    again = stub.TextToImage(t2i(prompt="a red fox in snow", seed=3, steps=2), timeout=TIMEOUT)
    other = stub.TextToImage(t2i(prompt="a red fox in snow", seed=4, steps=2), timeout=TIMEOUT)
    assert again.image == default.image
    assert other.image != default.image

    # img2img runs the share of the schedule that the family's rounding gives, from the init image.
    steps, strength = 6, 0.5

    def refine(init_image: bytes) -> worker_pb2.GeneratedImage:
        params = common_pb2.GenerationParams(prompt="a red fox at night", seed=5, steps=steps)
        request = worker_pb2.ImageToImageRequest(params=params, init_image=init_image, strength=strength)
        return stub.ImageToImage(request, timeout=TIMEOUT)

    refined = refine(default.image)
    assert refined.steps_run == spec.img2img_steps(steps, strength) < steps
    assert decode(refined).size == (info.default_width, info.default_height)
    assert refine(other.image).image != refined.image, "the init image must matter"

    # Streaming: queued, started, every step in order, then the image.
    events = list(stub.TextToImageStream(t2i(prompt="a red fox", seed=3, steps=3), timeout=TIMEOUT))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["queued", "started", "step", "step", "step", "result"]
    assert [event.step.step for event in events if event.HasField("step")] == [1, 2, 3]
    assert events[-1].result.steps_run == 3
