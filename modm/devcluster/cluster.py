"""Start and stop a real Kubernetes control plane on 127.0.0.1, with kwok's fake GPU nodes.

`up()` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (the
binaries that scripts/build-k8s builds from the Go module proxy) as background processes on free
loopback ports, with everything they keep (certificates, etcd's data, logs, the kubeconfig) in
one folder and a state file there (`state.json`: the ports and each process's pid) that `down()`
reads to stop them and remove the folder. scripts/local-cluster is the command line over these
two functions, and the tests' fixture (tests/k8s_cluster.py) calls the same ones.

Nothing leaves loopback. Every component listens on 127.0.0.1 only. The nodes are Node objects
whose kubelet is kwok: it moves their pods to Running and gives each an address from POD_CIDR,
TEST-NET-2 (RFC 5737, never routed); Services get addresses from SERVICE_CIDR, TEST-NET-3. No
kube-proxy, CNI or container runtime runs, so nothing ever dials those addresses, and the nodes'
own address is 127.0.0.1 (the API server's `kubectl logs`/`exec` to a node are refused there:
kwok serves no kubelet port here).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modm.devcluster.pki import Authority, service_account_keys
from modm.launch import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-k8s"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
POD_CIDR = "198.51.100.0/24"  # TEST-NET-2: kwok's pod addresses
SERVICE_CIDR = "203.0.113.0/24"  # TEST-NET-3: Service ClusterIPs
NODE_IP = "127.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
STATE = "state.json"
AUDIT_LOG = "audit.log"  # in <dir>/logs/

NVIDIA_PRODUCT = {"product": "NVIDIA-H100-80GB-HBM3", "memory": "81559", "family": "hopper"}
AMD_PRODUCT = {"product-name": "AMD_Instinct_MI300X_OAM", "device-id": "74a1", "vram": "192G", "family": "AI"}


class ClusterError(RuntimeError):
    pass


def default_dir() -> Path:
    """$MODM_LOCAL_CLUSTER_DIR, else a folder of this user's in the temporary directory."""
    env = os.environ.get("MODM_LOCAL_CLUSTER_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"modm-local-cluster-{os.getuid()}"


def find_binaries(build: bool = False) -> Path | None:
    """The folder with the six binaries: $MODM_K8S_BIN, else scripts/build-k8s's cache. With
    `build`, runs scripts/build-k8s when they are missing (~6 minutes the first time on 2 idle cores);
    without it, None when they are missing."""
    env = os.environ.get("MODM_K8S_BIN")
    if env:
        folder = Path(env)
        missing = [b for b in BINARIES if not (folder / b).is_file()]
        if missing:
            raise ClusterError(f"MODM_K8S_BIN={env} lacks {missing}")
        return folder
    args = [str(BUILD_SCRIPT)] if build else [str(BUILD_SCRIPT), "--if-built"]
    done = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode == 0:
        return Path(done.stdout.strip().splitlines()[-1])
    if not build and done.returncode == 2:
        return None
    raise ClusterError(f"{' '.join(args)} failed with exit code {done.returncode}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """A kubeconfig with the certificates inline (JSON is YAML), so it works from anywhere."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modm-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": "modm-local", "context": {"cluster": "modm-local", "user": user}}],
        "current-context": "modm-local",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the components: no proxies (all their traffic is loopback's) and no
    KUBECONFIG (each is given its own)."""
    drop = {"KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra or {})
    return env


def _command_of(pid: int) -> str | None:
    """The command line of a live process, or None: /proc on Linux, else `ps -ww` (macOS; without
    -ww ps cuts it to the terminal's width, or 80 columns)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""  # alive, not ours
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return None
    done = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass
class Process:
    name: str
    pid: int
    binary: str
    log: str
    # What it was started with, so that it can be started again alone (same ports, same data).
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # The child's Popen when this Python process started it (not saved).
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def saved(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "binary": self.binary,
            "log": self.log,
            "args": self.args,
            "env": self.env,
        }

    def alive(self) -> bool:
        """Alive and still the process we started (its pid not reused by another program). A
        child of ours is asked through its Popen: right after vfork its /proc cmdline can still
        read empty (the exec has not set it up yet), which the check by command line would take
        for an exited process."""
        if self.popen is not None:
            return self.popen.poll() is None
        command = _command_of(self.pid)
        return bool(command) and (command == self.binary or command.startswith(self.binary + " "))

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.alive():
                return
            _reap(self.pid)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        for _ in range(50):
            _reap(self.pid)
            if not self.alive():
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    """Collects `pid` if it is a child of this process that has exited (no zombie left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Cluster:
    """A running local cluster: its folder, API server URL, admin credentials and processes."""

    dir: Path
    server: str
    kubeconfig: Path
    bin_dir: Path
    ca_file: Path
    admin_cert: Path
    admin_key: Path
    versions: dict[str, Any]
    ports: dict[str, int]
    nodes: list[str]
    processes: list[Process] = field(default_factory=list)
    started_s: float = 0.0

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "bin_dir": str(self.bin_dir),
            "ca_file": str(self.ca_file),
            "admin_cert": str(self.admin_cert),
            "admin_key": str(self.admin_key),
            "versions": self.versions,
            "ports": self.ports,
            "nodes": self.nodes,
            "processes": [p.saved() for p in self.processes],
            "started_s": self.started_s,
        }
        tmp = self.dir / (STATE + ".part")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.dir / STATE)

    @classmethod
    def load(cls, folder: Path) -> Cluster:
        state = json.loads((folder / STATE).read_text())
        return cls(
            dir=folder,
            server=state["server"],
            kubeconfig=Path(state["kubeconfig"]),
            bin_dir=Path(state["bin_dir"]),
            ca_file=Path(state["ca_file"]),
            admin_cert=Path(state["admin_cert"]),
            admin_key=Path(state["admin_key"]),
            versions=state["versions"],
            ports=state["ports"],
            nodes=state["nodes"],
            processes=[Process(**p) for p in state["processes"]],
            started_s=state.get("started_s", 0.0),
        )

    # -- clients -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment for kubectl/helm/the kubernetes client against this cluster."""
        env = _child_env({"KUBECONFIG": str(self.kubeconfig)})
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl (same release as the server) with the admin kubeconfig."""
        done = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert:
            context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def api(self, method: str, path: str, body: Any = None, *, url: str | None = None, timeout: float = 10) -> Any:
        """One request as the admin; the decoded JSON reply (ClusterError on an HTTP error)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request((url or self.server) + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:500]}") from exc
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    # -- lifecycle -----------------------------------------------------------------------------
    def down(self) -> None:
        """Stops every process (last started first) and removes the folder."""
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def audit(self) -> list[dict[str, Any]]:
        """The API server's audit log so far (see `_audit_policy`), oldest first."""
        path = self.dir / "logs" / AUDIT_LOG
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def running(self) -> dict[str, bool]:
        return {p.name: p.alive() for p in self.processes}

    def process(self, name: str) -> Process:
        found = [p for p in self.processes if p.name == name]
        if not found:
            raise ClusterError(f"no {name} in this cluster (it has {', '.join(p.name for p in self.processes)})")
        return found[0]

    def launch(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        """Starts the binary `name` with `args` in the background (its output appended to
        logs/<name>.log) and records it in the state file, in the place of an earlier one."""
        log_path = self.dir / "logs" / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=_child_env(env),
                start_new_session=True,  # outlives `scripts/local-cluster up`; `down` stops it
            )
        process = Process(name, popen.pid, str(self.bin_dir / name), str(log_path), list(args), dict(env or {}), popen)
        names = [p.name for p in self.processes]
        if name in names:
            self.processes[names.index(name)] = process
        else:
            self.processes.append(process)
        self.save()
        return process

    def healthy(self, name: str) -> bool:
        """Whether a component answers its health endpoint (kwok, which has none: whether it runs)."""
        if name == "etcd":
            return _probe(f"http://127.0.0.1:{self.ports['etcd']}/health", None)
        if name == "kube-apiserver":
            return _probe(f"{self.server}/readyz", self.ssl_context())
        if name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{self.ports[name.removeprefix('kube-')]}/healthz"
            return _probe(url, self.ssl_context(client_cert=False))
        return self.process(name).alive()

    def stop_component(self, name: str, grace: float = 10.0) -> None:
        """Stops one component (SIGTERM, SIGKILL after `grace` s) and keeps its record, ports and
        data, so that `start_component` brings it back as it was: an outage of just that part.
        kube-apiserver stops listening at SIGTERM but may take a minute to exit (it waits for
        its long-running requests): a short grace ends it sooner."""
        self.process(name).stop(grace)

    def start_component(self, name: str, timeout: float = 60.0) -> Process:
        """Starts a stopped component again with the flags, ports and data it had; returns once
        it is healthy (kube-apiserver: /readyz)."""
        old = self.process(name)
        if old.alive():
            raise ClusterError(f"{name} is running (pid {old.pid}); stop it first")
        process = self.launch(name, old.args, old.env)
        _wait(f"{name} to be healthy", lambda: self.healthy(name), [process], time.monotonic() + timeout)
        return process


# -- nodes ------------------------------------------------------------------------------------
def _node(name: str, labels: dict[str, str], allocatable: dict[str, str], kube_version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": kube_version,
                "osImage": "kwok fake node",
            },
        },
    }


def node_manifests(
    gpus: int, amd_gpus: int, gpus_per_node: int, cpu_nodes: int, kube_version: str
) -> list[dict[str, Any]]:
    """`gpus` NVIDIA GPUs and `amd_gpus` AMD GPUs, `gpus_per_node` to a node (the last node of a
    vendor takes the rest), plus `cpu_nodes` nodes without GPUs. Each GPU node has the labels the
    vendors' own software sets on a real one: NVIDIA's GPU feature discovery (nvidia.com/gpu.*),
    and for AMD the GPU operator's node-feature rule (feature.node.kubernetes.io/amd-gpu) and
    node labeller (amd.com/gpu.*)."""
    if min(gpus, amd_gpus, cpu_nodes) < 0 or gpus_per_node < 1:
        raise ClusterError("GPU and node counts must be >= 0, gpus per node >= 1")
    base = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    manifests = []

    def split(total: int) -> list[int]:
        return [min(gpus_per_node, total - start) for start in range(0, total, gpus_per_node)]

    for i, count in enumerate(split(gpus)):
        labels = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(count),
            **{f"nvidia.com/gpu.{k}": v for k, v in NVIDIA_PRODUCT.items()},
        }
        manifests.append(_node(f"nvidia-{i}", labels, {**base, "nvidia.com/gpu": str(count)}, kube_version))
    for i, count in enumerate(split(amd_gpus)):
        labels = {
            "feature.node.kubernetes.io/amd-gpu": "true",
            **{f"amd.com/gpu.{k}": v for k, v in AMD_PRODUCT.items()},
        }
        manifests.append(_node(f"amd-{i}", labels, {**base, "amd.com/gpu": str(count)}, kube_version))
    for i in range(cpu_nodes):
        manifests.append(_node(f"cpu-{i}", {}, base, kube_version))
    return manifests


def _audit_policy(path: Path) -> Path:
    """The API server's audit policy: every write (create, update, patch, delete) by anyone but
    the control plane itself and kwok's fake kubelets, one JSON line each in logs/audit.log, with
    who sent it (user, user agent), what it touched and the answer's code. It shows who changed
    what in a test, e.g. which monitor replica patched a Deployment, or a 409 a client was given."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
            {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"]},
            {"level": "None", "namespaces": ["kube-node-lease", "kube-system"]},
            {"level": "None", "resources": [{"group": "", "resources": ["nodes/status", "pods/status"]}]},
            {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
            {"level": "None"},
        ],
    }
    path.write_text(json.dumps(policy, indent=2) + "\n")  # JSON is YAML
    return path


def _kwok_config(stages_dir: Path, path: Path) -> Path:
    """kwok's configuration file: the Stages (node and pod lifecycles) it plays; recent kwok
    releases play none unless given some. They are the release's own "fast" set, copied from its
    module by scripts/build-k8s. Its options are flags: a KwokConfiguration read from a file gets
    none of its defaults (kwok then refuses to start), one made from flags gets them all."""
    stages = sorted(stages_dir.glob("*.yaml"))
    if not stages:
        raise ClusterError(f"no kwok stages in {stages_dir}; rebuild with scripts/build-k8s")
    path.write_text("\n---\n".join(s.read_text().strip() for s in stages) + "\n")
    return path


# -- up / down --------------------------------------------------------------------------------
def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _probe(url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as reply:
            return reply.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait(what: str, ready: Callable[[], bool], watch: list[Process], deadline: float) -> None:
    """Polls `ready` until `deadline` (monotonic); fails at once with its log when a watched process exits."""
    while time.monotonic() < deadline:
        if ready():
            return
        for process in watch:
            _reap(process.pid)
            if not process.alive():
                raise ClusterError(f"{process.name} exited; the end of {process.log}:\n{_tail(Path(process.log))}")
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.log}\n{_tail(Path(p.log), 10)}" for p in watch)
    raise ClusterError(f"timed out waiting for {what}\n{logs}")


@contextlib.contextmanager
def _cleanup_on_error(cluster: Cluster, keep: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for process in reversed(cluster.processes):
            process.stop(grace=3)
        if not keep:
            shutil.rmtree(cluster.dir, ignore_errors=True)
        raise


def up(
    folder: Path | None = None,
    *,
    gpus: int = 8,
    amd_gpus: int = 0,
    gpus_per_node: int = 4,
    cpu_nodes: int = 1,
    bin_dir: Path | None = None,
    build: bool = False,
    timeout: float = 180.0,
    keep_on_error: bool = True,
    log: Any = None,
) -> Cluster:
    """Starts a cluster in `folder` (default: default_dir()) and returns once every node is
    Ready, both controllers are healthy and the default ServiceAccount exists."""
    say = log or (lambda message: None)
    t0 = time.monotonic()
    folder = (folder or default_dir()).resolve()
    if (folder / STATE).exists():
        old = Cluster.load(folder)
        if any(old.running().values()):
            raise ClusterError(f"a cluster is already running in {folder}: `down` it first, or use another --dir")
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise ClusterError(f"{folder} exists and is not a local cluster's folder; choose another --dir")
    bin_dir = bin_dir or find_binaries(build=build)
    if bin_dir is None:
        raise ClusterError("the Kubernetes binaries are not built: run scripts/build-k8s (~6 minutes once on 2 cores)")
    bin_dir = Path(bin_dir)
    versions = json.loads((bin_dir.parent / "versions.json").read_text())
    kube_version = versions["kubernetes"]

    for sub in ("pki", "logs", "etcd", "kwok"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    pki = folder / "pki"
    ca = Authority(pki)
    service_ip = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
    serving = ca.issue(
        "serving",
        "kube-apiserver",
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", service_ip),
    )
    admin = ca.issue("admin", "modm-local-admin", "system:masters")
    kcm_id = ca.issue("controller-manager", "system:kube-controller-manager")
    sched_id = ca.issue("scheduler", "system:kube-scheduler")
    sa = service_account_keys(pki)
    front_proxy = Authority(pki / "front-proxy", "modm-local-front-proxy-ca")
    proxy_client = front_proxy.issue("front-proxy-client", "front-proxy-client")

    ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")}
    server = f"https://127.0.0.1:{ports['apiserver']}"

    def config_for(stem: str, identity: Any, user: str) -> Path:
        return _kubeconfig(folder / stem, server, ca.pair.cert, identity.cert, identity.key, user)

    kubeconfig = config_for("kubeconfig", admin, "modm-local-admin")
    kcm_config = config_for("controller-manager.kubeconfig", kcm_id, "kube-controller-manager")
    sched_config = config_for("scheduler.kubeconfig", sched_id, "kube-scheduler")
    cluster = Cluster(
        dir=folder,
        server=server,
        kubeconfig=kubeconfig,
        bin_dir=bin_dir,
        ca_file=ca.pair.cert,
        admin_cert=admin.cert,
        admin_key=admin.key,
        versions=versions,
        ports=ports,
        nodes=[],
    )
    cluster.save()

    def start(name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = cluster.launch(name, args, env)
        say(f"started {name} (pid {process.pid})")
        return process

    def wait(what: str, ready: Callable[[], bool], watch: list[Process]) -> None:
        _wait(f"{what} ({timeout:.0f} s)", ready, watch, t0 + timeout)

    with _cleanup_on_error(cluster, keep_on_error):
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        etcd = start(
            "etcd",
            [
                "--name=local",
                f"--data-dir={folder / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--unsafe-no-fsync=true",  # a throwaway cluster: no fsync, much faster on a busy disk
                "--log-level=warn",
            ],
        )
        wait("etcd", lambda: cluster.healthy("etcd"), [etcd])

        apiserver = start(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.pair.cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The front proxy (aggregated APIs; the controllers' delegated authentication reads it).
                f"--requestheader-client-ca-file={front_proxy.pair.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={proxy_client.cert}",
                f"--proxy-client-key-file={proxy_client.key}",
                # The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints reject.
                "--endpoint-reconciler-type=none",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                f"--audit-policy-file={_audit_policy(folder / 'audit-policy.yaml')}",
                f"--audit-log-path={folder / 'logs' / AUDIT_LOG}",
            ],
        )
        wait("kube-apiserver /readyz", lambda: cluster.healthy("kube-apiserver"), [etcd, apiserver])

        common = [
            "--bind-address=127.0.0.1",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            "--leader-elect=false",
        ]
        kcm = start(
            "kube-controller-manager",
            [
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                f"--secure-port={ports['controller-manager']}",
                *common,
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={ca.pair.cert}",
                f"--cluster-signing-cert-file={ca.pair.cert}",
                f"--cluster-signing-key-file={ca.pair.key}",
                "--cluster-name=modm-local",
                "--profiling=false",
            ],
        )
        scheduler = start(
            "kube-scheduler",
            [
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                f"--secure-port={ports['scheduler']}",
                *common,
            ],
        )
        kwok_config = _kwok_config(bin_dir.parent / "share" / "kwok-stages", folder / "kwok" / "kwok.yaml")
        kwok = start(
            "kwok",
            [
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={'='.join(KWOK_ANNOTATION)}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
                "--node-lease-duration-seconds=40",
            ],
            # kwok also reads <workdir>/kwok.yaml (default ~/.kwok/): keep a person's out of it.
            env={"KWOK_WORKDIR": str(folder / "kwok")},
        )
        everything = [etcd, apiserver, kcm, scheduler, kwok]

        for manifest in node_manifests(gpus, amd_gpus, gpus_per_node, cpu_nodes, kube_version):
            cluster.api("POST", "/api/v1/nodes", manifest)
            cluster.nodes.append(manifest["metadata"]["name"])
        cluster.save()
        say(f"created nodes {', '.join(cluster.nodes)}")

        for name in ("kube-controller-manager", "kube-scheduler"):
            wait(f"{name} /healthz", lambda name=name: cluster.healthy(name), everything)

        def nodes_ready() -> bool:
            items = cluster.api("GET", "/api/v1/nodes")["items"]
            ready = {
                n["metadata"]["name"]
                for n in items
                for c in n.get("status", {}).get("conditions") or []
                if c["type"] == "Ready" and c["status"] == "True"
            }
            return set(cluster.nodes) <= ready

        wait("the nodes to be Ready", nodes_ready, everything)

        def default_service_account() -> bool:
            try:
                cluster.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                return True
            except ClusterError:
                return False

        wait("the default ServiceAccount", default_service_account, everything)
        cluster.started_s = round(time.monotonic() - t0, 1)
        cluster.save()
    return cluster


def down(folder: Path | None = None) -> bool:
    """Stops the cluster recorded in `folder` and removes the folder; False when none is there."""
    folder = (folder or default_dir()).resolve()
    if not (folder / STATE).exists():
        return False
    Cluster.load(folder).down()
    return True


def load(folder: Path | None = None) -> Cluster:
    folder = (folder or default_dir()).resolve()
    if not (folder / STATE).exists():
        raise ClusterError(f"no local cluster in {folder}")
    return Cluster.load(folder)
