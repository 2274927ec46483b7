"""A real Kubernetes control plane on 127.0.0.1 with fake GPU nodes, for trying the operator and
for tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from the
Go module proxy by scripts/build-k8s (pins in tools/k8s/). scripts/local-cluster is its command
line (`python -m modm.devcluster`); tests/k8s_cluster.py's fixture calls the same `up`/`down`.
"""

from __future__ import annotations

from modm.devcluster.cluster import (
    POD_CIDR,
    SERVICE_CIDR,
    Cluster,
    ClusterError,
    default_dir,
    down,
    find_binaries,
    load,
    node_manifests,
    up,
)

__all__ = [
    "POD_CIDR",
    "SERVICE_CIDR",
    "Cluster",
    "ClusterError",
    "default_dir",
    "down",
    "find_binaries",
    "load",
    "node_manifests",
    "up",
]
