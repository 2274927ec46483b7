"""Discovery follows a DNS name as pods come and go, and keeps the last answer when DNS fails."""

from __future__ import annotations

from collections.abc import Callable

from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.policy import Pool, RoutingRules
from modm.v1 import common_pb2, worker_pb2


class FakeWorker:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    async def serving(self, timeout_s: float) -> bool:
        return True

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo:
        return worker_pb2.WorkerInfo(model_id="m", max_batch_size=2, default_width=128, default_height=128,
                                     default_steps=10, seconds_per_step=0.1, size_multiple=8)  # fmt: skip

    async def generate(self, params: common_pb2.GenerationParams, **kwargs: object) -> worker_pb2.GeneratedImage:
        raise AssertionError("discovery never generates")

    async def close(self) -> None:
        self.closed = True


def discovery(answers: list[list[str] | OSError]) -> tuple[Discovery, dict[str, FakeWorker]]:
    made: dict[str, FakeWorker] = {}

    def make(address: str) -> FakeWorker:
        made[address] = FakeWorker(address)
        return made[address]

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("workers-large.modm.svc", 50061)
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    make_client: Callable[[str], FakeWorker] = make
    found = Discovery({Pool.LARGE: ["dns:workers-large.modm.svc:50061"]}, Dispatcher(RoutingRules()), interval_s=1,
                      capacity_cap=None, make_client=make_client, resolver=resolver)  # type: ignore[arg-type]  # fmt: skip
    return found, made


async def test_pods_that_appear_and_disappear_are_followed() -> None:
    found, made = discovery([["10.0.0.1:50061"], ["10.0.0.1:50061", "10.0.0.2:50061"], ["10.0.0.2:50061"]])
    await found.refresh_once()
    assert set(found.dispatcher.workers) == {"10.0.0.1:50061"} and found.ready.is_set()
    await found.refresh_once()
    assert set(found.dispatcher.workers) == {"10.0.0.1:50061", "10.0.0.2:50061"}
    assert found.dispatcher.workers["10.0.0.2:50061"].capacity == 2
    await found.refresh_once()
    assert set(found.dispatcher.workers) == {"10.0.0.2:50061"}
    assert made["10.0.0.1:50061"].closed


async def test_a_dns_failure_keeps_the_workers_it_knew() -> None:
    found, _ = discovery([["10.0.0.1:50061"], OSError("temporary failure in name resolution")])
    await found.refresh_once()
    await found.refresh_once()
    assert set(found.dispatcher.workers) == {"10.0.0.1:50061"}
