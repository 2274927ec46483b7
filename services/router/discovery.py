"""Worker discovery: a static list of addresses, or DNS names re-resolved every interval (a
headless Service resolves to every ready pod). Each interval every worker's health and Info are
polled; the dispatcher learns capacity, speed and defaults, and stops using a worker that is
unreachable or not SERVING (loading, draining) until it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

from modm.services.router.backends import GrpcWorker, WorkerClient, WorkerFailure
from modm.services.router.dispatch import Dispatcher, WorkerState
from modm.services.router.policy import Pool

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


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
    ) -> None:
        self.targets = {pool: list(addresses) for pool, addresses in targets.items()}
        self.dispatcher = dispatcher
        self.interval_s = interval_s
        self.capacity_cap = capacity_cap
        self._make_client = make_client
        self._resolver = resolver
        self.clients: dict[str, WorkerClient] = {}
        self._task: asyncio.Task[None] | None = None
        # Set once a worker that can serve misses answered: a large one, or a small one when no
        # large pool is configured (the small pool then serves misses degraded).
        self.ready = asyncio.Event()

    def client(self, address: str) -> WorkerClient:
        return self.clients[address]

    async def _addresses(self) -> dict[str, Pool]:
        found: dict[str, Pool] = {}
        for pool, targets in self.targets.items():
            for target in targets:
                is_dns, host, port = split_target(target)
                if not is_dns:
                    found[format_address(host, port)] = pool
                    continue
                try:
                    for address in await self._resolver(host, port):
                        found[address] = pool
                except OSError as error:
                    log.warning("cannot resolve %s: %s", host, error)
                    # keep the addresses it resolved to last time
                    for address, worker in self.dispatcher.workers.items():
                        if worker.pool is pool and address in self.clients:
                            found.setdefault(address, pool)
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

    async def _probe(self, address: str, pool: Pool) -> None:
        client = self.clients[address]
        known = self.dispatcher.workers.get(address)
        try:
            if not await client.serving(PROBE_TIMEOUT_S):
                raise WorkerFailure(address, "UNAVAILABLE", "not SERVING")
            info = await client.info(PROBE_TIMEOUT_S)
        except WorkerFailure as error:
            if known is not None and known.healthy:
                log.warning("worker unhealthy", extra={"worker": address, "error": str(error)})
                known.healthy = False
            return
        capacity = max(1, info.max_batch_size)
        if self.capacity_cap is not None:
            capacity = min(capacity, self.capacity_cap)
        if known is None or not known.healthy:
            log.info("worker ready", extra={"worker": address, "pool": str(pool), "model": info.model_id})
        self.dispatcher.upsert(
            WorkerState(
                address=address,
                pool=pool,
                capacity=capacity,
                seconds_per_step=info.seconds_per_step,
                overhead_seconds=info.overhead_seconds,
                default_steps=info.default_steps,
                default_width=info.default_width,
                default_height=info.default_height,
                default_guidance_scale=info.default_guidance_scale or None,
                size_multiple=info.size_multiple or 8,
                model_id=info.model_id,
                family=info.family,
                healthy=True,
            )
        )
        if pool is Pool.LARGE or not self.targets.get(Pool.LARGE):
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
