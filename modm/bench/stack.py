"""The stack a bench runs against: `modm up` itself as a child process (so the benchmark measures
exactly what users start), and, for the small-only baseline, a second router.

Every mode gets the same hardware: `up_args` starts the baselines with every slot on their one
model (MoDM's vanilla system runs the large model on all GPUs), nirvana with every slot large and
the cache (hits refined by the large model: the router sends them there when there is no small
pool), and modm with the default split. On an emulated fleet the baselines that never read the
cache (large-only, small-only) start without it: its GPUs are not the machine's cores, and the
machine's cores are better left to the system under test. With tiny models the cache stays,
since it shares the cores that stand for the GPUs.

Small-only needs no router change: a router started with only the small pool and no cache
serves every request as a miss, degraded to the small pool's text-to-image (`degrade_misses`,
on by default). `small_only_router` starts one next to a running stack, on the small workers
that the stack's router lists in its Stats; the workers are shared, the cache is not touched.

`another_router` starts a replica of the stack's router (its settings, read from its process),
as the chart runs two: same workers, same cache, each dispatching from its own view of the
workers' load.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modm.launch import ServiceProcess, free_port, start_module

if TYPE_CHECKING:
    from modm.cli.up import Emulation

UNCACHED = ("large-only", "small-only")  # the modes that never read the cache


def up_args(
    mode: str,
    *,
    workers: int,
    monitor: bool,
    emulation: Emulation | None = None,
    large_slots: int | None = None,
) -> list[str]:
    """`modm up` flags for a mode's stack: baselines and nirvana put every slot on their model,
    unmonitored (the monitor would move slots to the other pool); modm starts split (`large_slots`
    large, default half), monitored if asked. With `emulation`, `workers` emulated GPUs."""
    all_large = ["--large-slots", str(workers)]
    split = {"large-only": all_large, "nirvana": all_large, "small-only": ["--large-slots", "0"]}.get(mode, [])
    if mode == "modm" and large_slots is not None:
        split = ["--large-slots", str(large_slots)]
    watched = monitor and mode == "modm"
    args = [*split, "--monitor" if watched else "--no-monitor", "--http-port", "0"]
    if emulation is None:
        return ["--workers", str(workers), *args]
    fleet = ["--emulate", str(workers), "--large-profile", emulation.large_profile]
    fleet += ["--small-profile", emulation.small_profile, "--time-scale", str(emulation.time_scale)]
    return [*fleet, *args, *(["--no-cache"] if mode in UNCACHED else [])]


def start_up(
    data_dir: Path,
    log_path: Path,
    *,
    args: Iterable[str] = (),
    port: int | None = None,
    ready_timeout_s: float = 900.0,
) -> ServiceProcess:
    """`modm up --data-dir DATA_DIR ARGS` on a free port; returns once its router is SERVING."""
    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Absolute: the cache's embedded S3 server does not run in this working directory.
    command = [sys.executable, "-m", "modm.cli.main", "up", "--data-dir", str(data_dir.resolve()), "--port", str(port)]
    command += list(args)
    proc = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    service = ServiceProcess(proc, port, log_path)
    try:
        service.wait_serving(ready_timeout_s)
    except BaseException:  # Ctrl-C or SIGTERM while it starts must not leave the stack behind
        service.stop(signal.SIGINT, timeout=120)
        raise
    return service


def wait_for_pools(endpoint: str, pools: Iterable[str], *, timeout_s: float = 120.0, token: str | None = None) -> dict:
    """The router's Stats once every named pool has a healthy, profiled worker."""
    from modm.client import Client, ModmClientError

    wanted = set(pools)
    deadline = time.monotonic() + timeout_s
    stats: dict = {}
    ready: set[str] = set()
    with Client(endpoint, token=token, timeout=30.0) as client:
        while time.monotonic() < deadline:
            try:
                stats = client.stats(timeout=10.0)
            except ModmClientError:
                stats = {}
            ready = {
                w["pool"] for w in stats.get("workers", []) if w.get("healthy") and w.get("profiled_seconds_per_step")
            }
            if wanted <= ready:
                return stats
            time.sleep(1.0)
    raise TimeoutError(f"the router at {endpoint} has no ready worker in pool(s) {sorted(wanted - ready)}: {stats}")


def wait_for_inserts(endpoint: str, *, timeout_s: float = 120.0, token: str | None = None) -> None:
    """Until the router has no cache insert pending: inserts run after the replies, so a warm-up
    is not in the cache when its last reply arrives."""
    from modm.client import Client

    deadline = time.monotonic() + timeout_s
    with Client(endpoint, token=token, timeout=30.0) as client:
        while client.stats(timeout=10.0).get("inserts_pending", 0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the router at {endpoint} still has cache inserts pending after {timeout_s} s")
            time.sleep(0.2)


def small_workers(stats: dict) -> list[str]:
    return sorted(w["address"] for w in stats.get("workers", []) if w.get("pool") == "small" and w.get("healthy"))


def router_env(up_pid: int) -> dict[str, str]:
    """The settings (MODM_ROUTER_*) of the router that `modm up` (`up_pid`) started."""
    import psutil

    for child in psutil.Process(up_pid).children(recursive=True):
        try:
            if "modm.services.router" in child.cmdline():
                return {k: v for k, v in child.environ().items() if k.startswith("MODM_ROUTER_")}
        except psutil.Error:
            continue
    raise RuntimeError(f"`modm up` (pid {up_pid}) runs no router")


def another_router(up_pid: int, log_dir: Path, index: int, *, metrics_port: int | None = None) -> ServiceProcess:
    """A replica of the stack's router on a port of its own (same workers, cache and settings;
    no HTTP API)."""
    port = free_port()
    env = router_env(up_pid) | {"MODM_ROUTER_PORT": str(port), "MODM_ROUTER_HTTP_PORT": "0"}
    env.pop("MODM_ROUTER_METRICS_PORT", None)
    if metrics_port is not None:
        env["MODM_ROUTER_METRICS_PORT"] = str(metrics_port)
    log_dir.mkdir(parents=True, exist_ok=True)
    router = start_module("modm.services.router", env, log_dir / f"router{index}.log", port)
    router.wait_serving(120.0)
    return router


def router_counters(roots: Iterable[int]) -> list[dict[str, Any]]:
    """The retry and request counters of every router under `roots` that exports metrics
    (`modm_router_retries_total` by status, `modm_router_requests_total` by result)."""
    import psutil

    out = []
    for pid in roots:
        try:
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            continue
        for process in tree:
            try:
                if "modm.services.router" not in process.cmdline():
                    continue
                port = process.environ().get("MODM_ROUTER_METRICS_PORT")
            except psutil.Error:
                continue
            if port:
                out.append({"metrics_port": int(port)} | scrape_counters(f"http://127.0.0.1:{port}/metrics"))
    return out


def scrape_counters(url: str) -> dict[str, Any]:
    """A router's retries by status and requests by result, from its Prometheus endpoint ({} if
    it cannot be read)."""
    from urllib.error import URLError
    from urllib.request import urlopen

    try:
        with urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
    except (URLError, OSError):
        return {}
    return counters_of(text)


def counters_of(text: str) -> dict[str, Any]:
    """Retries by status and requests by result in a router's Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    retries: dict[str, float] = {}
    results: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modm_router_retries_total":
                retries[sample.labels["code"]] = retries.get(sample.labels["code"], 0.0) + sample.value
            elif sample.name == "modm_router_requests_total":
                results[sample.labels["result"]] = results.get(sample.labels["result"], 0.0) + sample.value
    return {"retries": retries, "requests": results}


def small_only_router(workers: list[str], log_dir: Path) -> ServiceProcess:
    """A router with only these small workers and no cache (every request small text-to-image)."""
    if not workers:
        raise ValueError("the stack's router lists no healthy small worker for the small-only baseline")
    port = free_port()
    env = {
        "MODM_ROUTER_HOST": "127.0.0.1",
        "MODM_ROUTER_PORT": str(port),
        "MODM_ROUTER_SMALL_WORKERS": ",".join(workers),
        "MODM_ROUTER_DEGRADE_MISSES": "true",
        "MODM_ROUTER_LOG_FORMAT": "text",
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    router = start_module("modm.services.router", env, log_dir / "small-only-router.log", port)
    router.wait_serving(120.0)
    return router
