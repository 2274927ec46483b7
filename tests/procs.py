"""Start real service processes on free loopback ports, wait for SERVING, and stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_status(address: str, service: str = "", timeout: float = 2.0) -> int | None:
    """The health service's answer, or None if nothing answers."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
        except grpc.RpcError:
            return None


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited with {self.proc.returncode}:\n{self.log_tail()}")
            if health_status(self.address) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
        raise TimeoutError(f"not SERVING after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_module(module: str, env: Mapping[str, str], log_path: Path, port: int) -> ServiceProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module], env=full_env, stdout=log, stderr=subprocess.STDOUT
    )
    return ServiceProcess(proc, port, log_path)


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

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the wrapper and the server binary it started, then SIGKILL what is left."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait()


def start_milvus_server(data_dir: Path, log_dir: Path, port: int | None = None) -> MilvusServerProcess:
    """milvus-server on 127.0.0.1 with data in `data_dir` (reuse both to restart with the same data)."""
    port = port or free_port()
    args = [str(Path(sys.executable).parent / "milvus-server"), "--data", str(data_dir), "--proxy-port", str(port)]
    for component in MILVUS_COMPONENTS:
        args += ["--extra-config", f"{component}.ip=127.0.0.1"]
    log_path = log_dir / f"milvus-{port}.log"
    proc = subprocess.Popen(args, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return MilvusServerProcess(proc, port, data_dir, log_path)
