"""Start service processes on loopback ports, wait until they report SERVING, stop them.

Used by `modm up` and by the integration tests (tests/procs.py builds on it).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000
_handed_out: set[int] = set()
_handing_out = threading.Lock()


def _below_ephemeral() -> range:
    """Ports the kernel never gives an outgoing connection: below its ephemeral range (Linux's
    default starts at 32768)."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(_LOWEST_PORT, max(low, _LOWEST_PORT + 1000))


def free_port() -> int:
    """A loopback port free now for a server that starts later (a child process binds it seconds
    from now). Drawn at random below the kernel's ephemeral range, so no outgoing connection made
    meanwhile can take it (with a port from bind(0) one sometimes did), and never the same port
    twice in this process. For a port that a child binds at once, `ephemeral_port`."""
    ports = _below_ephemeral()
    with _handing_out:
        for _ in range(1000):
            port = random.choice(ports)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port found in {ports.start}-{ports.stop - 1}")


def ephemeral_port() -> int:
    """A port from the kernel's ephemeral range (bind to port 0), for a server started right
    away: it can never be one that `free_port` planned for a server still to start."""
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


def start_module(
    module: str, env: Mapping[str, str], log_path: Path, port: int, *, stdout: IO[bytes] | int | None = None
) -> ServiceProcess:
    """`python -m module` with `env` added; output goes to `log_path` (or `stdout` if given:
    e.g. subprocess.PIPE for a caller that tees the log itself)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
    sink = stdout if stdout is not None else log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", module], env=full_env, stdout=sink, stderr=subprocess.STDOUT)
    return ServiceProcess(proc, port, log_path)
