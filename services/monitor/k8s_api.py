"""The monitor's link to the Kubernetes API: the client, typed errors and the retry rules.

Kept apart from the scaler and the elector so both classify API failures the same way: a 404 is
reported (the Deployment is missing: retrying cannot help), a 409 is the caller's to resolve by
re-reading, 5xx/429/no connection are retried with capped exponential back-off, and any other
4xx (403 from RBAC, 422) is reported at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from modm.backoff import backoff_seconds
from modm.errors import FailedPrecondition, NotFound, Unavailable
from modm.services.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RbacRule:
    """One rule of the Role the monitor needs: these verbs on this resource of this API group."""

    api_group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]


class KubernetesUnavailable(Unavailable):
    """The API server kept failing (5xx, 429, no connection) after every retry."""


class KubernetesRejected(FailedPrecondition):
    """The API server refused the request (e.g. 403: the Role lacks a verb; 422: invalid)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ObjectMissing(NotFound):
    """A Deployment (or Lease) the settings name does not exist."""


class NotLeader(FailedPrecondition):
    """This replica no longer holds the Lease, so it must not write: another one may be acting."""


class Conflict(FailedPrecondition):
    """409: the object changed since it was read; re-read and try again."""


def api_client(settings: MonitorSettings) -> client.ApiClient:
    """The settings' kubeconfig, else in-cluster (service account), else the default kubeconfig.
    urllib3's own retries are off: they would repeat a timed-out request unseen (each attempt
    waiting its full timeout) under `Caller`'s, which back off and log. The user agent names the
    replica, so the API server's audit log tells the replicas' requests apart."""
    configuration = client.Configuration()
    configuration.retries = 0
    if settings.kubeconfig:
        config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    api = client.ApiClient(configuration)
    api.user_agent = f"{settings.field_manager}/{settings.identity}"
    return api


def micro_time(moment: datetime) -> str:
    """RFC 3339 with microseconds in UTC, as the API's MicroTime fields are written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _retryable(status: int | None) -> bool:
    """No status (no connection, timeout), 429 or 5xx: the server may answer better later."""
    return not status or status == 429 or status >= 500


@dataclass
class Caller:
    """Calls the API with the retry rules above; raises only the typed errors of this module."""

    settings: MonitorSettings
    sleep: Callable[[float], None] = time.sleep

    def __call__(self, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        attempt = 0
        while True:
            try:
                timeout = self.settings.request_timeout_seconds  # (connect, read): a lone float is ignored
                return fn(*args, _request_timeout=(timeout, timeout), **kwargs)
            except (ApiException, HTTPError) as error:
                status = getattr(error, "status", None)
                if status == 404:
                    raise ObjectMissing(f"{what}: not found") from error
                if status == 409:
                    raise Conflict(f"{what}: conflict") from error
                if not _retryable(status):
                    raise KubernetesRejected(f"{what}: {status} {getattr(error, 'reason', error)}", status) from error
                if attempt == self.settings.api_retries:
                    raise KubernetesUnavailable(f"{what}: failed {attempt + 1} times: {error}") from error
                limits = self.settings
                pause = backoff_seconds(attempt + 1, base=limits.backoff_seconds, cap=limits.backoff_max_seconds)
                pause *= random.uniform(0.5, 1.0)  # jitter: callers failing together do not retry together
                log.warning("kubernetes %s failed (%s); retrying in %.2fs", what, status or error, pause)
                self.sleep(pause)
                attempt += 1


def on_conflict(attempt: Callable[[], T], retries: int) -> T:
    """Runs `attempt` (which must re-read what it writes) again after each 409, `retries` times."""
    tries_left = retries
    while True:
        try:
            return attempt()
        except Conflict:
            if not tries_left:
                raise
            log.info("conflict; re-reading and retrying (%d tries left)", tries_left)
            tries_left -= 1
