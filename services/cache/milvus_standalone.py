"""A local Milvus standalone server from the `milvus` wheel (milvus==2.3.5), on loopback.

For the integration tests and the lookup benchmark (production points MODM_MILVUS_URI at a real
deployment). The wheel's `milvus-server` wrapper cannot restart on its data folder reliably, so
this runs the server binary it ships (`milvus run standalone`) with a configuration written from
the wheel's own template, and differs from the wrapper in three ways:

- Every port is chosen once per data folder, kept in `<data>/modm-ports.json`, and used as is.
  The wrapper re-probes each port at start-up with a plain bind; right after a stop the old
  connections' TIME_WAIT makes that bind fail, so it moves the component to the next port. The
  server registered every component's address in its embedded etcd, and those sessions outlive
  the restart until their leases expire: components (and clients) are sent to the old
  addresses, a moved proxy no longer answers on the port clients know, and a component that
  meets a stale address now held by something else fails for good ("node not match").
- The embedded etcd's own ports come from an etcd config file (`ETCD_CONFIG_PATH`); the wrapper
  leaves them on their defaults (client 2379, peer 2380), so a second server on the machine dies
  at start-up ("bind: address already in use").
- Every component listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modm.launch import free_port

if TYPE_CHECKING:
    import psutil

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# The ports the wheel's config template has, and two more: the embedded etcd's peer port and the
# metrics/health port (METRICS_PORT).
TEMPLATE_PORTS = (
    "proxy_port",
    "etcd_port",
    "root_coord_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)
PORT_KEYS = (*TEMPLATE_PORTS, "etcd_peer_port", "metrics_port")


def _ports(data_dir: Path, proxy_port: int | None) -> dict[str, int]:
    """The folder's ports: chosen on first use, the same on every restart."""
    path = data_dir / "modm-ports.json"
    if path.exists():
        ports = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        if proxy_port is not None and proxy_port != ports["proxy_port"]:
            raise ValueError(f"{data_dir} was served on port {ports['proxy_port']}, not {proxy_port}")
        return ports
    ports = {key: free_port() for key in PORT_KEYS}  # distinct, kept by the folder for every restart
    if proxy_port is not None:
        ports["proxy_port"] = proxy_port
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports))
    return ports


def _etcd_config(data_dir: Path, ports: dict[str, int]) -> Path:
    client = f"http://127.0.0.1:{ports['etcd_port']}"
    peer = f"http://127.0.0.1:{ports['etcd_peer_port']}"
    path = data_dir / "configs" / "embedEtcd.yaml"
    path.write_text(
        "name: default\n"
        f"listen-client-urls: {client}\n"
        f"advertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )
    return path


def _configure(data_dir: Path, ports: dict[str, int]) -> Path:
    """Unpack the server binary and write `configs/milvus.yaml` from the wheel's template."""
    from milvus import MilvusServerConfig, _initialize_data_files

    config = MilvusServerConfig(data_dir=str(data_dir))
    config.resolve_storage()  # data, logs and config folders under data_dir
    for key in TEMPLATE_PORTS:
        config.set(key, ports[key])
    for component in COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    config.write_config()
    _initialize_data_files(str(data_dir))
    return data_dir / "bin" / "milvus"


@dataclass
class MilvusStandalone:
    """A running `milvus run standalone` process."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus exited with {self.proc.returncode}; see {self.log_path}")
            try:
                client = MilvusClient(uri=self.uri, timeout=3)
                client.list_collections()
                client.close()
                return
            except Exception as exc:
                last = exc
                time.sleep(0.5)
        raise TimeoutError(f"Milvus not ready after {timeout}s: {last}")

    def processes(self) -> list[psutil.Process]:
        """The server and its children (`milvus run` may run the server in a child process)."""
        import psutil  # a dev dependency, like the `milvus` wheel itself

        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 60.0) -> None:
        """Send `sig` to the server and its children, wait, then SIGKILL what is left.

        SIGKILL by default: the 2.3.5 standalone's graceful stop can take minutes on a busy
        machine, and everything it acknowledged is already in its write-ahead log on disk.
        """
        import psutil

        family = self.processes()
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(sig)
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait()


def start_milvus_standalone(data_dir: Path, log_path: Path, port: int | None = None) -> MilvusStandalone:
    """Start the server with data in `data_dir`; start it again on the same folder to restart it."""
    data_dir = data_dir.resolve()
    ports = _ports(data_dir, port)
    binary = _configure(data_dir, ports)
    env = {
        **os.environ,
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(ports["metrics_port"]),
        "MILVUS_RUN_DIR": str(data_dir / "run"),
        "ETCD_CONFIG_PATH": str(_etcd_config(data_dir, ports)),
        "LD_LIBRARY_PATH": ":".join(filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")])),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(binary), "run", "standalone"],
            cwd=data_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return MilvusStandalone(proc, ports["proxy_port"], data_dir, log_path)
