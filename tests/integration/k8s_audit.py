"""The monitor's writes as the local cluster's API server logged them (modm.devcluster's audit log):
who sent each one (the replica's user agent, `modm-monitor/<identity>`), when by the server's
clock, to what, and the answer's code. The tests judge the monitors by this record, not by their
own logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modm.devcluster import Cluster

AGENT = "modm-monitor/"  # the monitor's field manager and the replica's identity (k8s_api.api_client)


@dataclass(frozen=True)
class Write:
    identity: str
    at: datetime
    resource: str  # deployments, deployments/scale, events, leases
    name: str
    code: int


def monitor_writes(cluster: Cluster, ns: str) -> list[Write]:
    """Every write a monitor replica sent into `ns`, answered or refused, oldest first."""
    writes = []
    for entry in cluster.audit():
        ref, agent = entry["objectRef"], entry.get("userAgent", "")
        if ref.get("namespace") != ns or not agent.startswith(AGENT):
            continue
        resource = "/".join(filter(None, (ref["resource"], ref.get("subresource"))))
        at = datetime.fromisoformat(entry["stageTimestamp"])
        writes.append(
            Write(agent.removeprefix(AGENT), at, resource, ref.get("name", ""), entry["responseStatus"]["code"])
        )
    return writes
