"""Discovery follows a DNS name as pods come and go, keeps the last answer when DNS fails, and
puts a `workers` entry in the pool its own Info names, following it when it restarts as the other model."""

from __future__ import annotations

from collections.abc import Callable

from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.policy import Pool, RoutingRules
from modm.v1 import common_pb2, worker_pb2


class FakeWorker:
    def __init__(self, address: str, role: int = worker_pb2.WORKER_ROLE_LARGE) -> None:
        self.address = address
        self.closed = False
        self.role = role
        self.up = True

    async def serving(self, timeout_s: float) -> bool:
        return self.up

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo:
        return worker_pb2.WorkerInfo(model_id="m", max_batch_size=2, default_width=128, default_height=128,
                                     default_steps=10, seconds_per_step=0.1, size_multiple=8,
                                     role=self.role)  # type: ignore[arg-type]  # fmt: skip

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


async def test_a_worker_restarted_as_the_other_model_moves_pools() -> None:
    workers = {"127.0.0.1:7001": FakeWorker("127.0.0.1:7001"), "127.0.0.1:7002": FakeWorker("127.0.0.1:7002")}
    workers["127.0.0.1:7002"].role = worker_pb2.WORKER_ROLE_SMALL
    found = Discovery({}, Dispatcher(RoutingRules()), interval_s=1, capacity_cap=None,
                      make_client=workers.__getitem__, any_pool=list(workers))  # type: ignore[arg-type]  # fmt: skip
    await found.refresh_once()
    dispatcher = found.dispatcher
    assert {a: w.pool for a, w in dispatcher.workers.items()} == {"127.0.0.1:7001": Pool.LARGE,
                                                                  "127.0.0.1:7002": Pool.SMALL}  # fmt: skip
    assert found.ready.is_set()
    held = dispatcher.workers["127.0.0.1:7001"]
    held.in_flight = 1  # a request still running on it while it drains
    workers["127.0.0.1:7001"].up = False  # draining, then loading the small model
    await found.refresh_once()
    assert dispatcher.pool_load(Pool.LARGE).workers == 0
    workers["127.0.0.1:7001"].up, workers["127.0.0.1:7001"].role = True, worker_pb2.WORKER_ROLE_SMALL
    await found.refresh_once()
    assert dispatcher.workers["127.0.0.1:7001"] is held and held.pool is Pool.SMALL and held.healthy
    assert dispatcher.pool_load(Pool.SMALL).workers == 2 and held.in_flight == 1


async def test_a_worker_naming_no_role_is_not_used() -> None:
    worker = FakeWorker("127.0.0.1:7003", role=worker_pb2.WORKER_ROLE_UNSPECIFIED)
    found = Discovery({}, Dispatcher(RoutingRules()), interval_s=1, capacity_cap=None,
                      make_client=lambda _: worker, any_pool=["127.0.0.1:7003"])  # type: ignore[arg-type]  # fmt: skip
    await found.refresh_once()
    assert found.dispatcher.workers == {} and not found.ready.is_set()


async def test_a_fleet_listed_all_small_is_ready_once_every_worker_answered() -> None:
    """`modm up --large-slots 0` (the small-only baseline): no large worker will come, so the
    router serves misses degraded instead of waiting for one forever."""
    workers = {a: FakeWorker(a, role=worker_pb2.WORKER_ROLE_SMALL) for a in ("127.0.0.1:7004", "127.0.0.1:7005")}
    workers["127.0.0.1:7005"].up = False  # still loading: it may yet be large
    found = Discovery({}, Dispatcher(RoutingRules()), interval_s=1, capacity_cap=None,
                      make_client=workers.__getitem__, any_pool=list(workers))  # type: ignore[arg-type]  # fmt: skip
    await found.refresh_once()
    assert not found.ready.is_set()
    workers["127.0.0.1:7005"].up = True
    await found.refresh_once()
    assert found.ready.is_set()
