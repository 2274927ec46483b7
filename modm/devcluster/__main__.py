"""scripts/local-cluster: `up`, `down` and `status` of a local Kubernetes cluster with fake GPU nodes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modm.devcluster.cluster import POD_CIDR, SERVICE_CIDR, ClusterError, default_dir, down, load, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/local-cluster",
        description="A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) with kwok's fake GPU nodes.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"the cluster's folder (state, certificates, etcd data, logs, kubeconfig); default "
        f"$MODM_LOCAL_CLUSTER_DIR or {default_dir()}. One cluster per folder.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # --dir also after the command (`up --dir D`); SUPPRESS keeps a --dir given before it.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="the cluster's folder (as above)")
    start = sub.add_parser("up", parents=[where], help="start a cluster; the last line printed is KUBECONFIG=<path>")
    start.add_argument("--gpus", type=int, default=8, help="NVIDIA GPUs in all (nvidia.com/gpu; default 8)")
    start.add_argument("--amd-gpus", type=int, default=0, help="AMD GPUs in all (amd.com/gpu; default 0)")
    start.add_argument("--gpus-per-node", type=int, default=4, help="GPUs on each GPU node (default 4)")
    start.add_argument("--cpu-nodes", type=int, default=1, help="nodes without GPUs (default 1)")
    start.add_argument(
        "--build", action="store_true", help="build the binaries first when missing (~6 minutes once on 2 cores)"
    )
    start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness (default 180)")
    sub.add_parser("down", parents=[where], help="stop the cluster and remove its folder")
    sub.add_parser("status", parents=[where], help="print the cluster's state as JSON (exit 1 unless all run)")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            cluster = up(
                args.dir,
                gpus=args.gpus,
                amd_gpus=args.amd_gpus,
                gpus_per_node=args.gpus_per_node,
                cpu_nodes=args.cpu_nodes,
                build=args.build,
                timeout=args.timeout,
                log=lambda message: print(f"local-cluster: {message}", file=sys.stderr),
            )
            versions = cluster.versions
            print(
                f"Kubernetes {versions['kubernetes']} (etcd {versions['etcd']}, kwok {versions['kwok']}) at "
                f"{cluster.server}, ready in {cluster.started_s} s; nodes: {', '.join(cluster.nodes)}"
            )
            print(f"pods get addresses from {POD_CIDR}, Services from {SERVICE_CIDR} (TEST-NETs: nothing dials them)")
            print(f"kubectl: {cluster.bin_dir / 'kubectl'}")
            print(f"stop it with: scripts/local-cluster --dir {cluster.dir} down")
            print(f"KUBECONFIG={cluster.kubeconfig}")
            return 0
        if args.command == "down":
            folder = args.dir or default_dir()
            if down(args.dir):
                print(f"local-cluster: stopped and removed {folder}")
            else:
                print(f"local-cluster: no cluster in {folder}")
            return 0
        cluster = load(args.dir)
        state = json.loads((cluster.dir / "state.json").read_text())
        state["running"] = cluster.running()
        print(json.dumps(state, indent=2))
        return 0 if all(state["running"].values()) else 1
    except ClusterError as exc:
        print(f"local-cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
