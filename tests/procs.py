"""Start real service processes on free loopback ports, wait for SERVING, and stop them."""

from __future__ import annotations

from pathlib import Path

from modm.launch import ServiceProcess, free_port, start_module
from modm.services.cache.milvus_standalone import MilvusStandalone, start_milvus_standalone


def start_worker(model_dir: Path | None, log_dir: Path, **settings: object) -> ServiceProcess:
    """A worker process on a free port, configured through its MODM_WORKER_* variables (no
    model for an emulated device)."""
    port = free_port()
    env = {"MODM_WORKER_PORT": str(port), "MODM_WORKER_HOST": "127.0.0.1"}
    if model_dir is not None:
        env["MODM_WORKER_MODEL"] = str(model_dir)
    env.update({f"MODM_WORKER_{key.upper()}": str(value) for key, value in settings.items()})
    return start_module("modm.services.worker", env, log_dir / f"worker-{port}.log", port)


def start_cache(data_dir: Path, log_dir: Path, **settings: object) -> ServiceProcess:
    """A cache process on a free port, configured through its MODM_CACHE_* variables.

    With no `s3_endpoint` it starts its own SeaweedFS under `data_dir`; with no `milvus_uri`
    it keeps a Milvus Lite file there.
    """
    port = free_port()
    env = {"MODM_CACHE_DATA_DIR": str(data_dir), "MODM_CACHE_PORT": str(port), "MODM_CACHE_HOST": "127.0.0.1"}
    env.update({f"MODM_CACHE_{key.upper()}": str(value) for key, value in settings.items()})
    return start_module("modm.services.cache", env, log_dir / f"cache-{port}.log", port)


def start_router(log_dir: Path, large: str, small: str, cache: str | None, **settings: object) -> ServiceProcess:
    """A router process on a free port over these worker and cache addresses ('' for none),
    configured through its MODM_ROUTER_* variables; discovery re-checks workers every 0.5 s."""
    port = free_port()
    env = {
        "MODM_ROUTER_PORT": str(port),
        "MODM_ROUTER_HOST": "127.0.0.1",
        "MODM_ROUTER_LARGE_WORKERS": large,
        "MODM_ROUTER_SMALL_WORKERS": small,
        "MODM_ROUTER_LOG_FORMAT": "text",
        "MODM_ROUTER_DISCOVERY_INTERVAL_S": "0.5",
    }
    if cache:
        env["MODM_ROUTER_CACHE"] = cache
    env.update({f"MODM_ROUTER_{k.upper()}": str(v) for k, v in settings.items()})
    return start_module("modm.services.router", env, log_dir / f"router-{port}.log", port)


def start_milvus_server(data_dir: Path, log_dir: Path, port: int | None = None) -> MilvusStandalone:
    """A real Milvus standalone server (milvus==2.3.5) on 127.0.0.1 with data in `data_dir`.

    Start it again on the same `data_dir` to restart it (same ports, same data)."""
    return start_milvus_standalone(data_dir, log_dir / f"milvus-{data_dir.name}.log", port)
