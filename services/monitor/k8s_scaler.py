"""Applies the monitor's decisions to the two worker Deployments through their `scale` subresource.

An operator that shares the cluster with people: it writes what it did and why onto each
Deployment (annotations `modm.io/target-replicas`, `modm.io/reason`, `modm.io/decided-at`) and as
core/v1 Events, so `kubectl describe deploy` explains every change. It never fights a human: the
target annotation records the replicas it last set, so live replicas that differ mean someone
scaled by hand (unless the Deployment's managedFields say the monitor wrote them: its own scale
whose annotation was lost); it records that, adopts their value and leaves the Deployment alone
for `manual_hold_seconds`. `modm.io/paused: "true"` stops it from touching a Deployment at all.

A move between the pools shrinks first and grows only once the shrunk pool's pods are gone: on
a cluster whose GPUs are all in use, a pod of the growing pool started earlier would wait Pending
for a GPU that a terminating pod still holds (and could make a cluster autoscaler add a node).
If the shrink does not happen (paused, held, changed by hand), the other pool grows only into
the GPUs the decision's total leaves it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from kubernetes import client

from modm.services.monitor.k8s_api import (
    Caller,
    KubernetesRejected,
    KubernetesUnavailable,
    NotLeader,
    RbacRule,
    micro_time,
    on_conflict,
)
from modm.services.monitor.leader import LEASE_RBAC
from modm.services.monitor.observations import Allocation, Decision
from modm.services.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

TARGET = "modm.io/target-replicas"
REASON = "modm.io/reason"
DECIDED_AT = "modm.io/decided-at"
PAUSED = "modm.io/paused"
MANUAL_AT = "modm.io/manual-scale-at"
COMPONENT = "modm-monitor"

# Exactly the API calls this module and `leader` make; the chart's Role must grant these and no more,
# and names the objects (the two Deployments, the Lease) in every rule but `create`, which RBAC
# cannot limit to a name.
REQUIRED_RBAC: tuple[RbacRule, ...] = (
    RbacRule("apps", "deployments", ("get", "patch")),  # annotations
    RbacRule("apps", "deployments/scale", ("get", "patch")),
    RbacRule("", "events", ("create",)),
    *LEASE_RBAC,
)

# A shrunk pool's pods get their terminationGracePeriodSeconds and this long to be gone before the
# other pool grows anyway (its new pod then waits Pending until the GPU is free).
GONE_MARGIN_SECONDS = 15.0
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds

T = TypeVar("T")
Pool = Literal["large", "small"]
Action = Literal["scaled", "unchanged", "paused", "manual", "held"]
HELD_BACK: frozenset[Action] = frozenset({"paused", "manual", "held"})  # the monitor may not move these


@dataclass(frozen=True)
class PoolOutcome:
    pool: Pool
    deployment: str
    action: Action
    replicas: int  # live replicas after this round
    target: int


@dataclass(frozen=True)
class ScaleOutcome:
    large: PoolOutcome
    small: PoolOutcome

    @property
    def allocation(self) -> Allocation:
        """What the pools really have now: the next decision starts from this, not the target."""
        return Allocation(self.large.replicas, self.small.replicas)

    @property
    def held_back(self) -> str | None:
        """Which Deployments this round left alone (paused, or held after a hand scale), or None."""
        kept = [f"{p.deployment} {p.action}" for p in (self.large, self.small) if p.action in HELD_BACK]
        return ", ".join(kept) or None


@dataclass(frozen=True)
class _Live:
    deployment: client.V1Deployment
    replicas: int
    resource_version: str

    @property
    def annotations(self) -> dict[str, str]:
        return self.deployment.metadata.annotations or {}


class KubernetesScaler:
    moves_one_at_a_time = False  # a Deployment's new replicas start together

    def __init__(
        self,
        settings: MonitorSettings,
        api: client.ApiClient,
        *,
        caller: Caller | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        """`leading` says whether this replica still holds the Lease; it is asked before every write."""
        self._settings = settings
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._call = caller or Caller(settings)
        self._now = now
        self._leading = leading

    def _write(self, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """A write, sent only while this replica still holds the Lease: a round can outlast the
        leadership it began with (it may wait for a shrunk pool's pods to stop, or stall), and
        another replica may be acting by then."""
        if not self._leading():
            raise NotLeader(f"{what}: this replica no longer holds the Lease")
        return self._call(what, fn, *args, **kwargs)

    def _deployments(self) -> tuple[tuple[Pool, str], tuple[Pool, str]]:
        return ("large", self._settings.large_deployment), ("small", self._settings.small_deployment)

    def current(self) -> Allocation:
        """Live replicas of both pools, as the scale subresource reports them."""
        large, small = (self._read(name).replicas for _, name in self._deployments())
        return Allocation(large, small)

    def apply(self, decision: Decision) -> ScaleOutcome:
        """Shrinks the pool that loses GPUs, waits until its pods are gone, then grows the other."""
        targets = {"large": decision.target.large, "small": decision.target.small}
        before = self.current()
        (shrink_pool, shrink_name), (grow_pool, grow_name) = sorted(
            self._deployments(), key=lambda d: targets[d[0]] - getattr(before, d[0])
        )
        first = self._scale(shrink_pool, shrink_name, targets[shrink_pool], decision.reason)
        if first.action == "scaled" and first.replicas < getattr(before, shrink_pool):
            self._wait_until_gone(shrink_name, first.replicas)
        target, reason = targets[grow_pool], decision.reason
        room = decision.target.large + decision.target.small - first.replicas
        if room < target:  # the shrink did not happen: grow only into what the decision's total leaves
            target = max(getattr(before, grow_pool), room)
            reason = f"{reason} (capped at {target}: {shrink_name} {first.action} at {first.replicas})"
            log.warning("%s: %s", grow_name, reason)
        second = self._scale(grow_pool, grow_name, target, reason)
        by_pool = {first.pool: first, second.pool: second}
        return ScaleOutcome(by_pool["large"], by_pool["small"])

    def _scale(self, pool: Pool, name: str, target: int, reason: str) -> PoolOutcome:
        return on_conflict(lambda: self._reconcile(pool, name, target, reason), self._retries)

    def _wait_until_gone(self, name: str, replicas: int) -> None:
        """Until the Deployment runs at most `replicas` pods and none is terminating (their GPUs
        are free), for at most the pods' grace period and GONE_MARGIN_SECONDS. A server without
        `status.terminatingReplicas` (before Kubernetes 1.35) shows only the pods that are not
        terminating: there the other pool's new pod may wait Pending while the last ones stop."""
        ns = self._settings.namespace
        deadline: float | None = None
        while True:
            deployment = self._call(f"get deployment {ns}/{name}", self._apps.read_namespaced_deployment, name, ns)
            status = deployment.status
            if deadline is None:
                grace = deployment.spec.template.spec.termination_grace_period_seconds
                deadline = time.monotonic() + (DEFAULT_GRACE_SECONDS if grace is None else grace) + GONE_MARGIN_SECONDS
            observed = (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            if observed and (status.replicas or 0) <= replicas and not status.terminating_replicas:
                return
            if time.monotonic() > deadline:
                log.warning("%s still has pods stopping; growing the other pool anyway", name)
                return
            self._call.sleep(self._settings.shrink_poll_seconds)

    @property
    def _retries(self) -> int:
        return self._settings.conflict_retries

    def _read(self, name: str) -> _Live:
        ns = self._settings.namespace
        deployment = self._call(f"get deployment {ns}/{name}", self._apps.read_namespaced_deployment, name, ns)
        scale = self._call(f"get {ns}/{name}/scale", self._apps.read_namespaced_deployment_scale, name, ns)
        return _Live(deployment, scale.spec.replicas or 0, scale.metadata.resource_version)

    def _reconcile(self, pool: Pool, name: str, target: int, reason: str) -> PoolOutcome:
        """One read-decide-write round; raises Conflict (and is re-run) if the object moved meanwhile."""
        live = self._read(name)
        outcome = PoolOutcome(pool, name, "unchanged", live.replicas, target)
        if live.annotations.get(PAUSED, "").lower() == "true":
            log.info("%s is paused (%s); not touching it", name, PAUSED)
            return PoolOutcome(pool, name, "paused", live.replicas, target)
        manual_at = live.annotations.get(MANUAL_AT)
        hold = timedelta(seconds=self._settings.manual_hold_seconds)
        if manual_at and self._now() - datetime.fromisoformat(manual_at.replace("Z", "+00:00")) < hold:
            return PoolOutcome(pool, name, "held", live.replicas, target)
        last_set = live.annotations.get(TARGET)
        unrecorded = last_set is not None and last_set != str(live.replicas)
        if unrecorded and self._written_by_another(live):
            self._adopt_manual(live, int(last_set))
            return PoolOutcome(pool, name, "manual", live.replicas, target)
        if unrecorded:
            log.warning("%s: recording the monitor's own scale to %d, whose record was lost", name, live.replicas)
        if live.replicas == target:
            if last_set is None:  # first contact: record a baseline to tell later hand scales apart
                self._annotate(name, live.resource_version, target, "adopted the current replicas")
            elif unrecorded:
                self._annotate(name, live.resource_version, target, f"{reason} (recorded after the scale)")
            return outcome
        ns = self._settings.namespace
        scale = self._write(
            f"patch {ns}/{name}/scale",
            self._apps.patch_namespaced_deployment_scale,
            name,
            ns,
            {"metadata": {"resourceVersion": live.resource_version}, "spec": {"replicas": target}},
            field_manager=self._settings.field_manager,
        )
        on_conflict(lambda: self._annotate_if_still(name, target, reason), self._retries)
        message = f"scaled from {live.replicas} to {target} replicas: {reason}"
        log.info("%s %s", name, message)
        self._event(live.deployment, "Rescaled", message)
        return PoolOutcome(pool, name, "scaled", scale.spec.replicas or 0, target)  # 0 is left out of the reply

    def _written_by_another(self, live: _Live) -> bool:
        """Whether someone else (a person's `kubectl scale`, helm) wrote the replicas last, by the
        Deployment's managedFields: a write moves a field to its writer's field manager. The
        monitor's own scale whose annotation never landed (the API server went away in
        between) is not a hand scale. A server that keeps no managedFields counts as someone else."""
        for entry in live.deployment.metadata.managed_fields or []:
            if "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {}):
                return entry.manager != self._settings.field_manager
        return True

    def _annotate_if_still(self, name: str, target: int, reason: str) -> None:
        """Records the target unless someone moved the replicas since the scale write: then the
        next round finds live != recorded and treats it as a hand scale."""
        live = self._read(name)
        if live.replicas == target:
            self._annotate(name, live.resource_version, target, reason)

    def _annotate(self, name: str, resource_version: str, replicas: int, reason: str, **extra: str | None) -> None:
        annotations = {TARGET: str(replicas), REASON: reason, DECIDED_AT: micro_time(self._now()), MANUAL_AT: None}
        annotations.update(extra)
        ns = self._settings.namespace
        self._write(
            f"annotate deployment {ns}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            ns,
            {"metadata": {"resourceVersion": resource_version, "annotations": annotations}},
            field_manager=self._settings.field_manager,
        )

    def _adopt_manual(self, live: _Live, last_set: int) -> None:
        name = live.deployment.metadata.name
        message = (
            f"replicas changed by hand to {live.replicas} (the monitor had set {last_set}); adopting "
            f"{live.replicas} and leaving {name} alone for {self._settings.manual_hold_seconds:g}s"
        )
        log.warning("%s", message)
        now = micro_time(self._now())
        self._annotate(name, live.resource_version, live.replicas, message, **{MANUAL_AT: now})
        self._event(live.deployment, "ManualScale", message)

    def _event(self, deployment: client.V1Deployment, reason: str, message: str) -> None:
        """Best effort, like client-go's recorder: a lost Event must not undo a scaling."""
        meta = deployment.metadata
        now = self._now().astimezone(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta.name}.{int(now.timestamp() * 1e9):x}", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._settings.identity,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._write(f"create event for {meta.name}", self._core.create_namespaced_event, meta.namespace, body)
        except (KubernetesRejected, KubernetesUnavailable, NotLeader) as error:
            log.warning("could not record event %s on %s: %s", reason, meta.name, error)
