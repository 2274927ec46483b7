"""A real worker process per tiny family and per shipped emulated profile, driven through the
generated stubs: every RPC on both, the pixels on the tiny ones, the profile on the emulated ones."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from modm.images import encode_image
from modm.launch import ServiceProcess, health_status
from modm.services.worker.device_profile import load_profile, shipped_profiles
from modm.services.worker.families import FAMILIES_BY_NAME
from modm.services.worker.servicer import ROLE_TO_PROTO
from modm.services.worker.tiny import TINY_FAMILIES
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.procs import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 120
# Shipped profiles run 100x faster: SDXL's 30 default steps sleep 36 ms.
TIME_SCALE = 0.01
EMULATED = [f"emulated:{name}" for name in shipped_profiles()]


@dataclass(frozen=True)
class Served:
    """A running worker and what its Info must say: (family, role, device, dtype)."""

    name: str
    process: ServiceProcess
    expected: tuple[str, int, str, str]


def start(name: str, tiny_model: Callable[[str], Path], log_dir: Path) -> Served:
    if name.startswith("emulated:"):
        profile = load_profile(name.removeprefix("emulated:"))
        worker = start_worker(
            None, log_dir, device="emulated", profile=profile.name, time_scale=TIME_SCALE, log_format="text"
        )
        return Served(name, worker, (profile.family, ROLE_TO_PROTO[profile.role], "emulated", profile.dtype))
    worker = start_worker(tiny_model(name), log_dir, role="small", log_format="text")
    return Served(name, worker, (name, worker_pb2.WORKER_ROLE_SMALL, "cpu", "fp32"))


@pytest.fixture(scope="module")
def family_worker(request: pytest.FixtureRequest, tiny_model: Callable[[str], Path], log_dir: Path) -> Iterator[Served]:
    served = start(request.param, tiny_model, log_dir)
    try:
        served.process.wait_serving()
        yield served
    finally:
        assert served.process.stop() == 0, served.process.log_tail()


def stub_for(worker: ServiceProcess) -> worker_pb2_grpc.WorkerStub:
    return worker_pb2_grpc.WorkerStub(grpc.insecure_channel(worker.address))


def decode(result: worker_pb2.GeneratedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.image))
    image.load()
    return image


def t2i(**params: object) -> worker_pb2.TextToImageRequest:
    return worker_pb2.TextToImageRequest(params=common_pb2.GenerationParams(**params))  # type: ignore[arg-type]


def refine(stub: worker_pb2_grpc.WorkerStub, init_image: bytes, steps: int = 6) -> worker_pb2.GeneratedImage:
    """img2img at strength 0.5."""
    params = common_pb2.GenerationParams(prompt="a red fox at night", seed=5, steps=steps)
    request = worker_pb2.ImageToImageRequest(params=params, init_image=init_image, strength=0.5)
    return stub.ImageToImage(request, timeout=TIMEOUT)


@pytest.mark.parametrize("family_worker", [*TINY_FAMILIES, *EMULATED], indirect=True)
def test_every_worker_serves_every_rpc(family_worker: Served) -> None:
    worker = family_worker.process
    stub = stub_for(worker)
    assert health_status(worker.address, "modm.v1.Worker") == health_pb2.HealthCheckResponse.SERVING

    info = stub.Info(worker_pb2.InfoRequest(), timeout=10)
    spec = FAMILIES_BY_NAME[info.family]
    assert (info.family, info.role, info.device, info.dtype) == family_worker.expected
    assert info.seconds_per_step > 0 and info.load_seconds > 0
    assert info.default_width % info.size_multiple == 0
    assert info.supports_negative_prompt == spec.supports_negative_prompt

    # Default size, and an explicit non-square size.
    default = stub.TextToImage(t2i(prompt="a red fox in snow", seed=3, steps=2), timeout=TIMEOUT)
    assert decode(default).size == (info.default_width, info.default_height)
    assert default.seed == 3 and default.steps_run == 2 and default.batch_size == 1
    assert default.model_id == info.model_id
    width, height = info.default_width + info.size_multiple, info.default_width
    sized = stub.TextToImage(t2i(prompt="a red fox", seed=1, steps=2, width=width, height=height), timeout=TIMEOUT)
    assert decode(sized).size == (width, height) == (sized.width, sized.height)

    # img2img runs the share of the schedule that the family's rounding gives.
    refined = refine(stub, default.image)
    assert refined.steps_run == spec.img2img_steps(6, 0.5) < 6
    assert decode(refined).size == (info.default_width, info.default_height)

    # Streaming: queued, started, every step in order, then the image.
    events = list(stub.TextToImageStream(t2i(prompt="a red fox", seed=3, steps=3), timeout=TIMEOUT))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["queued", "started", "step", "step", "step", "result"]
    assert [event.step.step for event in events if event.HasField("step")] == [1, 2, 3]
    assert events[-1].result.steps_run == 3


@pytest.mark.parametrize("family_worker", TINY_FAMILIES, indirect=True)
def test_the_seed_and_the_init_image_decide_the_pixels(family_worker: Served) -> None:
    stub = stub_for(family_worker.process)
    first = stub.TextToImage(t2i(prompt="a red fox in snow", seed=3, steps=2), timeout=TIMEOUT)
    again = stub.TextToImage(t2i(prompt="a red fox in snow", seed=3, steps=2), timeout=TIMEOUT)
    other = stub.TextToImage(t2i(prompt="a red fox in snow", seed=4, steps=2), timeout=TIMEOUT)
    assert again.image == first.image
    assert other.image != first.image
    assert refine(stub, other.image).image != refine(stub, first.image).image, "the init image must matter"


@pytest.mark.parametrize("family_worker", EMULATED, indirect=True)
def test_an_emulated_worker_serves_its_profile(family_worker: Served) -> None:
    profile = load_profile(family_worker.name.removeprefix("emulated:"))
    stub = stub_for(family_worker.process)
    info = stub.Info(worker_pb2.InfoRequest(), timeout=10)
    assert info.model_id == family_worker.name
    assert (info.default_width, info.default_height) == (profile.width, profile.height)
    assert (info.default_steps, info.size_multiple) == (profile.default_steps, profile.size_multiple)
    assert info.load_seconds == pytest.approx(profile.load_seconds * TIME_SCALE)
    # img2img answers a colour derived from its init image.
    red, blue = (encode_image(Image.new("RGB", (64, 64), colour)) for colour in ((200, 0, 0), (0, 0, 200)))
    assert refine(stub, red).image != refine(stub, blue).image
