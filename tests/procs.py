"""Start real service processes on free loopback ports, wait for SERVING, and stop them."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modm.launch import ServiceProcess, free_port, start_module


def start_worker(model_dir: Path, log_dir: Path, **settings: object) -> ServiceProcess:
    """A worker process on a free port, configured through its MODM_WORKER_* variables."""
    port = free_port()
    env = {
        "MODM_WORKER_MODEL": str(model_dir),
        "MODM_WORKER_PORT": str(port),
        "MODM_WORKER_HOST": "127.0.0.1",
    }
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


MILVUS_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


@dataclass
class MilvusServerProcess:
    """A real Milvus standalone server (`milvus-server` from the `milvus` package)."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.proc.returncode}")
            try:
                client = MilvusClient(uri=self.uri, timeout=3)
                client.list_collections()
                client.close()
                return
            except Exception as exc:
                last = exc
                time.sleep(0.5)
        raise TimeoutError(f"Milvus not ready after {timeout}s: {last}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT the wrapper (its own stop: SIGTERM the server binary, SIGKILL it after 1 s),
        then SIGKILL whatever is left."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait()


def start_milvus_server(data_dir: Path, log_dir: Path, port: int | None = None) -> MilvusServerProcess:
    """milvus-server on 127.0.0.1 with data in `data_dir` (reuse both to restart with the same data)."""
    port = port or free_port()
    args = [
        str(Path(sys.executable).parent / "milvus-server"),
        "--data",
        str(data_dir),
        "--proxy-port",
        str(port),
    ]
    for component in MILVUS_COMPONENTS:
        args += ["--extra-config", f"{component}.ip=127.0.0.1"]
    log_path = log_dir / f"milvus-{port}.log"
    proc = subprocess.Popen(args, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return MilvusServerProcess(proc, port, data_dir, log_path)
