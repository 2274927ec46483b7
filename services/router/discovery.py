"""Worker discovery: a static list of addresses, or DNS names re-resolved every interval (a
headless Service resolves to every ready pod). Each interval every worker's health and Info are
polled; the dispatcher learns capacity, speed, load time and defaults, and stops using a
worker that is unreachable or not SERVING (loading, draining) until it answers again.

A worker's pool is either fixed by the list it is in (`large_workers`, `small_workers`) or, for
the `workers` list, read from its own Info (`WorkerInfo.role`) every round: a worker that
restarts as the other model (the monitor's local scaler switching a slot) moves pools without
the router restarting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from modm.services.router.backends import GrpcWorker, WorkerClient, WorkerFailure
from modm.services.router.dispatch import Dispatcher, WorkerState
from modm.services.router.policy import Pool
from modm.v1 import worker_pb2

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
POOL_OF_ROLE = {worker_pb2.WORKER_ROLE_LARGE: Pool.LARGE, worker_pb2.WORKER_ROLE_SMALL: Pool.SMALL}


def split_target(target: str) -> tuple[bool, str, int]:
    """`dns:name:port` -> (True, name, port); `host:port` -> (False, host, port)."""
    is_dns = target.startswith("dns:")
    rest = target[4:] if is_dns else target
    host, _, port = rest.rpartition(":")
    return is_dns, host.strip("[]"), int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(name: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({format_address(str(info[4][0]), port) for info in infos})


class Discovery:
    def __init__(
        self,
        targets: Mapping[Pool, Sequence[str]],
        dispatcher: Dispatcher,
        *,
        interval_s: float,
        capacity_cap: int | None,
        make_client: Callable[[str], WorkerClient] = GrpcWorker,
        resolver: Callable[[str, int], Awaitable[list[str]]] = resolve,
        any_pool: Sequence[str] = (),
    ) -> None:
        """`targets`: addresses per fixed pool; `any_pool`: addresses whose pool is their Info's role."""
        self.targets = {pool: list(addresses) for pool, addresses in targets.items()}
        self.any_pool = list(any_pool)
        self.dispatcher = dispatcher
        self.interval_s = interval_s
        self.capacity_cap = capacity_cap
        self._make_client = make_client
        self._resolver = resolver
        self.clients: dict[str, WorkerClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._resolved: dict[str, list[str]] = {}  # dns target -> its last answer
        # Set once a worker that can serve misses answered: a large one, or a small one when no
        # large worker can appear (the small pool then serves misses degraded): no large target
        # is configured, or every worker of a `workers` list answered and named itself small.
        self.ready = asyncio.Event()

    def client(self, address: str) -> WorkerClient:
        """The client of a known worker; UNAVAILABLE when discovery removed it since it was chosen."""
        found = self.clients.get(address)
        if found is None:
            raise WorkerFailure(address, "UNAVAILABLE", "worker was removed")
        return found

    async def _expand(self, target: str) -> list[str]:
        is_dns, host, port = split_target(target)
        if not is_dns:
            return [format_address(host, port)]
        try:
            self._resolved[target] = await self._resolver(host, port)
        except OSError as error:
            log.warning("cannot resolve %s: %s", host, error)  # keep what it resolved to last time
        return self._resolved.get(target, [])

    async def _addresses(self) -> dict[str, Pool | None]:
        """Every address, with its fixed pool, or None when its Info's role decides."""
        found: dict[str, Pool | None] = {}
        for target in self.any_pool:
            for address in await self._expand(target):
                found[address] = None
        for pool, targets in self.targets.items():
            for target in targets:
                for address in await self._expand(target):
                    found[address] = pool
        return found

    async def refresh_once(self) -> None:
        addresses = await self._addresses()
        for address in list(self.clients):
            if address not in addresses:
                log.info("worker gone", extra={"worker": address})
                self.dispatcher.remove(address)
                client = self.clients.pop(address)
                with contextlib.suppress(Exception):
                    await client.close()
        for address in addresses:
            if address not in self.clients:
                self.clients[address] = self._make_client(address)
        await asyncio.gather(*(self._probe(address, pool) for address, pool in addresses.items()))
        if self.any_pool and not self.targets.get(Pool.LARGE) and self._all_answered_small(addresses):
            self.ready.set()

    def _all_answered_small(self, addresses: Iterable[str]) -> bool:
        states = [self.dispatcher.workers.get(address) for address in addresses]
        return bool(states) and all(s is not None and s.healthy and s.pool is Pool.SMALL for s in states)

    async def _probe(self, address: str, fixed: Pool | None) -> None:
        client = self.clients[address]
        known = self.dispatcher.workers.get(address)
        try:
            if not await client.serving(PROBE_TIMEOUT_S):
                raise WorkerFailure(address, "UNAVAILABLE", "not SERVING")
            info = await client.info(PROBE_TIMEOUT_S)
            pool = fixed if fixed is not None else POOL_OF_ROLE.get(info.role)
            if pool is None:
                raise WorkerFailure(address, "FAILED_PRECONDITION", "its Info names no role (large or small)")
        except WorkerFailure as error:
            if known is not None and known.healthy:
                log.warning("worker unhealthy", extra={"worker": address, "error": str(error)})
                known.healthy = False
            return
        capacity = max(1, info.max_batch_size)
        if self.capacity_cap is not None:
            capacity = min(capacity, self.capacity_cap)
        if known is None or not known.healthy or known.pool is not pool:
            log.info("worker ready", extra={"worker": address, "pool": str(pool), "model": info.model_id})
        self.dispatcher.upsert(
            WorkerState(
                address=address,
                pool=pool,
                capacity=capacity,
                seconds_per_step=info.seconds_per_step,
                overhead_seconds=info.overhead_seconds,
                default_steps=info.default_steps,
                load_seconds=info.load_seconds,
                default_width=info.default_width,
                default_height=info.default_height,
                default_guidance_scale=info.default_guidance_scale or None,
                size_multiple=info.size_multiple or 8,
                model_id=info.model_id,
                family=info.family,
                healthy=True,
            )
        )
        if pool is Pool.LARGE or not (self.targets.get(Pool.LARGE) or self.any_pool):
            self.ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except Exception:
                log.exception("discovery round failed")
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self.clients.clear()
