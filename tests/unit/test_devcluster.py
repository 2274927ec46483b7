"""modm.devcluster's pieces that need no binaries: the certificates, the fake nodes, kwok's config,
the state file, `down` without a cluster, and stopping and starting one component again. The
cluster itself: tests/integration/test_local_cluster.py."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from modm.devcluster import POD_CIDR, SERVICE_CIDR, Cluster, ClusterError, down, node_manifests
from modm.devcluster.cluster import _kwok_config, find_binaries
from modm.devcluster.pki import Authority, service_account_keys

ROOT = Path(__file__).resolve().parents[2]


def test_certificates_chain_to_the_ca_with_the_right_identities(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    serving = ca.issue("serving", "kube-apiserver", dns=("localhost",), ips=("127.0.0.1",))
    admin = ca.issue("admin", "modm-local-admin", "system:masters")
    sa = service_account_keys(tmp_path)

    cert = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=modm-local-admin"
    cert.verify_directly_issued_by(ca.cert)
    sans = x509.load_pem_x509_certificate(serving.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert ipaddress.ip_address("127.0.0.1") in sans.value.get_values_for_type(x509.IPAddress)
    ssl.create_default_context(cafile=str(ca.pair.cert)).load_cert_chain(str(admin.cert), str(admin.key))
    assert b"PUBLIC KEY" in sa.cert.read_bytes()
    assert all(p.stat().st_mode & 0o077 == 0 for p in (ca.pair.key, admin.key, serving.key, sa.key))


def test_nodes_split_gpus_per_node_with_vendor_labels() -> None:
    nodes = node_manifests(gpus=10, amd_gpus=3, gpus_per_node=4, cpu_nodes=1, kube_version="v1.36.3")
    summary = [
        (
            n["metadata"]["name"],
            n["status"]["allocatable"].get("nvidia.com/gpu"),
            n["status"]["allocatable"].get("amd.com/gpu"),
        )
        for n in nodes
    ]
    assert summary == [
        ("nvidia-0", "4", None),
        ("nvidia-1", "4", None),
        ("nvidia-2", "2", None),
        ("amd-0", None, "3"),
        ("cpu-0", None, None),
    ]
    nvidia = nodes[2]["metadata"]["labels"]
    assert nvidia["nvidia.com/gpu.present"] == "true" and nvidia["nvidia.com/gpu.count"] == "2"
    amd = nodes[3]["metadata"]["labels"]
    assert amd["feature.node.kubernetes.io/amd-gpu"] == "true" and "amd.com/gpu.product-name" in amd
    assert all(n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for n in nodes)
    assert nodes[0]["status"]["capacity"] == nodes[0]["status"]["allocatable"]
    with pytest.raises(ClusterError):
        node_manifests(gpus=-1, amd_gpus=0, gpus_per_node=4, cpu_nodes=0, kube_version="v1.36.3")


def test_the_addresses_nothing_dials_are_documentation_ranges() -> None:
    test_nets = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    for cidr in (POD_CIDR, SERVICE_CIDR):
        assert any(ipaddress.ip_network(cidr).subnet_of(net) for net in test_nets)


def test_kwok_config_carries_every_stage(tmp_path: Path) -> None:
    stages = tmp_path / "stages"
    stages.mkdir()
    for name in ("node-initialize", "pod-ready"):
        stage = f"apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n  name: {name}\n"
        (stages / f"{name}.yaml").write_text(stage)
    docs = _kwok_config(stages, tmp_path / "kwok.yaml").read_text().split("\n---\n")
    assert [d.split("name: ")[1].strip() for d in docs] == ["node-initialize", "pod-ready"]
    with pytest.raises(ClusterError, match="no kwok stages"):
        _kwok_config(tmp_path / "empty", tmp_path / "other.yaml")


def test_down_without_a_cluster_is_not_an_error(tmp_path: Path) -> None:
    assert down(tmp_path / "nothing") is False
    done = subprocess.run(
        [sys.executable, "-m", "modm.devcluster", "--dir", str(tmp_path / "nothing"), "down"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "no cluster" in done.stdout
    status = subprocess.run(
        [sys.executable, "-m", "modm.devcluster", "status", "--dir", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert status.returncode == 1 and "no local cluster" in status.stderr


def test_explicit_binary_folder_must_hold_all_six(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODM_K8S_BIN", str(tmp_path))
    with pytest.raises(ClusterError, match="lacks"):
        find_binaries()


def test_build_script_key_follows_the_pins() -> None:
    key = subprocess.run([str(ROOT / "scripts/build-k8s"), "--key"], capture_output=True, text=True, check=True)
    gomod = (ROOT / "tools/k8s/go.mod").read_text()
    version = next(line.split()[1] for line in gomod.splitlines() if line.strip().startswith("k8s.io/kubernetes v"))
    assert key.stdout.strip().startswith(f"kubernetes-{version}-")


def test_a_component_is_stopped_and_started_again_with_the_same_flags(tmp_path: Path) -> None:
    """What an outage test does to kube-apiserver, on a stand-in binary (named kwok, whose health
    is whether it runs) that notes each start's arguments and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kwok"
    fake.write_text('#!/bin/sh\necho "$* $FAKE_SETTING" >> "$0.starts"\nexec sleep 60\n')
    fake.chmod(0o755)
    starts = bin_dir / "kwok.starts"
    folder = tmp_path / "cluster"
    (folder / "logs").mkdir(parents=True)
    cluster = Cluster(folder, "https://127.0.0.1:1", folder / "kubeconfig", bin_dir, *[folder / "x"] * 3, {}, {}, [])
    first = cluster.launch("kwok", ["--port=1234", "--data=/d"], {"FAKE_SETTING": "kept"})
    try:
        wait_until(lambda: starts.exists() and len(starts.read_text().splitlines()) == 1)
        with pytest.raises(ClusterError, match="is running"):
            cluster.start_component("kwok")
        cluster.stop_component("kwok", grace=2)
        assert not first.alive() and cluster.running() == {"kwok": False}
        again = cluster.start_component("kwok")
        assert again.pid != first.pid and cluster.running() == {"kwok": True}
        wait_until(lambda: len(starts.read_text().splitlines()) == 2)
        assert starts.read_text().splitlines() == ["--port=1234 --data=/d kept"] * 2
        saved = Cluster.load(folder).process("kwok")
        assert (saved.pid, saved.args, saved.env) == (again.pid, ["--port=1234", "--data=/d"], {"FAKE_SETTING": "kept"})
    finally:
        cluster.down()
    assert not again.alive() and not folder.exists()
    with pytest.raises(ClusterError, match="no etcd"):
        cluster.process("etcd")


def wait_until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)
