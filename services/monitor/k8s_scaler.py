"""Applies the monitor's decisions to the two worker Deployments through their `scale` subresource.

An operator that shares the cluster with people: it writes what it did and why onto each
Deployment (annotations `modm.io/target-replicas`, `modm.io/reason`, `modm.io/decided-at`) and as
core/v1 Events, so `kubectl describe deploy` explains every change. It never fights a human: the
target annotation records the replicas it last set, so live replicas that differ mean someone
scaled by hand; it records that, adopts their value and leaves the Deployment alone for
`manual_hold_seconds`. `modm.io/paused: "true"` stops it from touching a Deployment at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from kubernetes import client

from modm.services.monitor.k8s_api import (
    Caller,
    KubernetesRejected,
    KubernetesUnavailable,
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

# Exactly the API calls this module and `leader` make; the chart's Role must grant these and no more.
REQUIRED_RBAC: tuple[RbacRule, ...] = (
    RbacRule("apps", "deployments", ("get", "patch")),  # annotations
    RbacRule("apps", "deployments/scale", ("get", "patch")),
    RbacRule("", "events", ("create",)),
    *LEASE_RBAC,
)

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
    def __init__(
        self,
        settings: MonitorSettings,
        api: client.ApiClient,
        *,
        caller: Caller | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._call = caller or Caller(settings)
        self._now = now

    def _deployments(self) -> tuple[tuple[Pool, str], tuple[Pool, str]]:
        return ("large", self._settings.large_deployment), ("small", self._settings.small_deployment)

    def current(self) -> Allocation:
        """Live replicas of both pools, as the scale subresource reports them."""
        large, small = (self._read(name).replicas for _, name in self._deployments())
        return Allocation(large, small)

    def apply(self, decision: Decision) -> ScaleOutcome:
        targets = {"large": decision.target.large, "small": decision.target.small}
        large, small = (
            on_conflict(lambda p=pool, n=name: self._reconcile(p, n, targets[p], decision.reason), self._retries)
            for pool, name in self._deployments()
        )
        return ScaleOutcome(large, small)

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
        if last_set is not None and last_set != str(live.replicas):
            self._adopt_manual(live, int(last_set))
            return PoolOutcome(pool, name, "manual", live.replicas, target)
        if live.replicas == target:
            if last_set is None:  # first contact: record a baseline to tell later hand scales apart
                self._annotate(name, live.resource_version, target, "adopted the current replicas")
            return outcome
        ns = self._settings.namespace
        scale = self._call(
            f"patch {ns}/{name}/scale",
            self._apps.patch_namespaced_deployment_scale,
            name,
            ns,
            {"metadata": {"resourceVersion": live.resource_version}, "spec": {"replicas": target}},
            field_manager=self._settings.field_manager,
        )
        on_conflict(lambda: self._annotate_if_still(name, target, reason), self._retries)
        log.info("scaled %s from %d to %d: %s", name, live.replicas, target, reason)
        self._event(live.deployment, "Rescaled", reason)
        return PoolOutcome(pool, name, "scaled", scale.spec.replicas, target)

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
        self._call(
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
            self._call(f"create event for {meta.name}", self._core.create_namespaced_event, meta.namespace, body)
        except (KubernetesRejected, KubernetesUnavailable) as error:
            log.warning("could not record event %s on %s: %s", reason, meta.name, error)
