"""Start-up and shutdown of a monitor process: bind the health port (gRPC health + reflection, for
the liveness probe), start the Lease elector and the control loop, report SERVING while the loop
is alive, and on SIGTERM stop the loop and give the Lease up so another replica takes over at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modm.logs import configure_logging
from modm.services.monitor.k8s_api import api_client
from modm.services.monitor.k8s_scaler import KubernetesScaler
from modm.services.monitor.leader import LeaseElector
from modm.services.monitor.loop import MonitorLoop
from modm.services.monitor.policy import policy_named
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsClient
from modm.serving import ServiceHost

log = logging.getLogger(__name__)


async def serve(settings: MonitorSettings, host: ServiceHost | None = None) -> MonitorLoop:
    """Runs until the host is asked to stop; returns the loop (its last round) for callers that look."""
    if not settings.routers:
        raise ValueError("set MODM_MONITOR_ROUTERS (host:port or dns:name:port, comma-separated)")
    if settings.scaler != "kubernetes":
        raise ValueError("a monitor process scales Deployments (scaler=kubernetes); scaler=local runs inside modm up")
    host = host or ServiceHost(settings, [])
    api = api_client(settings)
    elector = LeaseElector(settings, api)
    scaler = KubernetesScaler(settings, api, leading=lambda: elector.is_leader)
    reader = StatsClient(
        settings.routers,
        timeout_s=settings.stats_timeout_s,
        token_file=settings.router_token_file,
        tls=settings.router_tls(),
        source=settings.identity,
    )
    loop = MonitorLoop(settings, reader, scaler, policy_named(settings.policy), elector, control=reader)
    stop = asyncio.Event()
    await host.start()
    elector.start()
    task = asyncio.create_task(loop.run(stop))

    def died(done: asyncio.Task[None]) -> None:
        if not stop.is_set():  # liveness: NOT_SERVING, the probe restarts the pod
            log.error("control loop stopped", extra={"error": repr(done.exception()) if not done.cancelled() else ""})
            asyncio.get_running_loop().create_task(host.set_serving(False))

    task.add_done_callback(died)
    await host.set_serving(True)
    log.info(
        "monitoring",
        extra={"routers": settings.routers, "interval_s": settings.interval_s, "policy": settings.policy},
    )
    try:
        await host.run_until_stopped()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, settings.grace_seconds or None)
        await asyncio.to_thread(elector.stop, True)
        await reader.close()
        api.close()
    return loop


def main(settings: MonitorSettings) -> None:
    configure_logging("monitor", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
