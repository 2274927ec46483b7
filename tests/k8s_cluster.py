"""A real Kubernetes control plane for the tests: the `local_cluster` fixture.

It starts the cluster through modm.devcluster, the code behind scripts/local-cluster, so the tests
run what a person runs: etcd, kube-apiserver (RBAC, ServiceAccount tokens), kube-controller-manager,
kube-scheduler and kwok on 127.0.0.1, with 8 NVIDIA GPUs on two nodes, 2 AMD GPUs on one node and a
CPU node. The binaries come from scripts/build-k8s's cache. Where they are missing the tests skip,
except under CI=true (or MODM_BUILD_K8S=1), where the fixture builds them through that script
first: ~6 minutes once per machine on 2 idle cores (longer on a loaded one), hence the long
timeout that `K8S_BUILD_TIMEOUT` gives the modules that use the fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from modm.devcluster import Cluster, down, find_binaries, up

# The first test to use the fixture may build the binaries (pytest-timeout counts fixture set-up).
K8S_BUILD_TIMEOUT = 3600


def k8s_binaries() -> Path:
    """The built binaries' folder; built now under CI=true or MODM_BUILD_K8S=1, else a skip."""
    build = os.environ.get("CI") == "true" or os.environ.get("MODM_BUILD_K8S") == "1"
    found = find_binaries(build=build)
    if found is None:
        pytest.skip(
            "the Kubernetes binaries are not built: run scripts/build-k8s (~6 min once) or set MODM_BUILD_K8S=1"
        )
    return found


@contextmanager
def running_cluster(tmp_path_factory: pytest.TempPathFactory, name: str, **nodes: int) -> Iterator[Cluster]:
    """A cluster of `nodes` (modm.devcluster.up's counts) in a fresh folder; stopped and removed
    at the end. Tests that take a component away (an API server outage) use one of their own."""
    folder = tmp_path_factory.mktemp(name) / "cluster"
    cluster = up(folder, bin_dir=k8s_binaries(), **nodes)
    try:
        yield cluster
    finally:
        down(folder)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running local cluster for the whole session; stopped and removed at its end."""
    with running_cluster(
        tmp_path_factory, "local-cluster", gpus=8, amd_gpus=2, gpus_per_node=4, cpu_nodes=1
    ) as cluster:
        yield cluster
