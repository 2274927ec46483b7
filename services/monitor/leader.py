"""Leader election on a coordination.k8s.io/v1 Lease, so two monitor replicas never both act.

The holder renews `spec.renewTime` every retry period; a candidate takes over once the holder
has been silent for `leaseDurationSeconds`. Like client-go, silence is measured on the
candidate's own monotonic clock from when it last saw the Lease record change, not by comparing
`renewTime` with its wall clock, so clock skew between nodes cannot make two leaders. Every write
carries the resourceVersion it read: of two candidates racing for a free Lease, one gets 409.
A leader that has not renewed for `renew_deadline_seconds` (< the lease duration) stops acting
before anyone else can take over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client

from modm.errors import ModmError
from modm.services.monitor.k8s_api import Caller, ObjectMissing, RbacRule, micro_time
from modm.services.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

LEASE_RBAC: tuple[RbacRule, ...] = (
    RbacRule("coordination.k8s.io", "leases", ("get", "update")),  # the Role names the Lease
    RbacRule("coordination.k8s.io", "leases", ("create",)),  # RBAC cannot limit create to a name
)


class LeaseElector:
    def __init__(
        self,
        settings: MonitorSettings,
        api: client.ApiClient,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._leases = client.CoordinationV1Api(api)
        # One try per round: the loop itself is the retry, and a slow round must not outlive the deadline.
        self._call = Caller(settings.model_copy(update={"api_retries": 0}))
        self._monotonic = monotonic
        self._now = now
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self._settings.identity

    @property
    def is_leader(self) -> bool:
        """True only while the last renewal is recent enough that no one else can hold the Lease."""
        renewed = self._renewed_at
        return renewed is not None and self._monotonic() - renewed < self._settings.renew_deadline_seconds

    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease. False if someone else holds it."""
        ns, name = self._settings.namespace, self._settings.lease_name
        try:
            try:
                lease = self._call(f"get lease {ns}/{name}", self._leases.read_namespaced_lease, name, ns)
            except ObjectMissing:
                self._call(f"create lease {ns}/{name}", self._leases.create_namespaced_lease, ns, self._body(None))
                return self._won(transition=True)
            spec = lease.spec
            record = (spec.holder_identity, spec.renew_time, lease.metadata.resource_version)
            if record != self._observed:
                self._observed, self._observed_at = record, self._monotonic()
            mine = spec.holder_identity == self.identity
            duration = spec.lease_duration_seconds or self._settings.lease_duration_seconds
            if spec.holder_identity and not mine and self._monotonic() - self._observed_at < duration:
                return self._lost()
            body = self._body(lease)
            self._call(f"update lease {ns}/{name}", self._leases.replace_namespaced_lease, name, ns, body)
            return self._won(transition=not mine)
        except ModmError as error:  # 409 (another candidate won the race) included
            log.info("lease %s/%s not acquired: %s", ns, name, error)
            return self._lost()

    def _body(self, lease: client.V1Lease | None) -> dict[str, object]:
        now = micro_time(self._now())
        spec = lease.spec if lease else None
        taking_over = spec is None or spec.holder_identity != self.identity
        transitions = (spec.lease_transitions or 0) if spec else 0
        meta: dict[str, object] = {"name": self._settings.lease_name, "namespace": self._settings.namespace}
        if lease:
            meta["resourceVersion"] = lease.metadata.resource_version
        return {
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._settings.lease_duration_seconds,
                "acquireTime": now if taking_over else micro_time(spec.acquire_time),
                "renewTime": now,
                "leaseTransitions": transitions + 1 if taking_over and spec and spec.holder_identity else transitions,
            },
        }

    def _won(self, transition: bool) -> bool:
        if transition or not self.is_leader:
            log.warning("%s is now the leader (lease %s)", self.identity, self._settings.lease_name)
        self._renewed_at = self._monotonic()
        return True

    def _lost(self) -> bool:
        if self.is_leader:
            log.warning("%s lost the lease %s", self.identity, self._settings.lease_name)
        self._renewed_at = None
        return False

    def release(self) -> None:
        """Gives the Lease up at once (holder cleared), so another replica need not wait it out."""
        if not self.is_leader:
            return
        ns, name = self._settings.namespace, self._settings.lease_name
        self._renewed_at = None
        try:
            lease = self._call(f"get lease {ns}/{name}", self._leases.read_namespaced_lease, name, ns)
            if lease.spec.holder_identity != self.identity:
                return
            body = self._body(lease)
            body["spec"] = {"leaseDurationSeconds": 1, "leaseTransitions": lease.spec.lease_transitions or 0}
            self._call(f"release lease {ns}/{name}", self._leases.replace_namespaced_lease, name, ns, body)
            log.warning("%s released the lease %s", self.identity, name)
        except ModmError as error:
            log.warning("could not release lease %s/%s: %s (it expires on its own)", ns, name, error)

    def start(self) -> None:
        """Keeps trying or renewing in a background thread until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.identity}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self._settings.retry_period_seconds)

    def stop(self, release: bool = True) -> None:
        """Stops renewing; `release=False` leaves the Lease to expire (as a crashed replica would)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        if release:
            self.release()
        self._renewed_at = None
