"""An emulated Kubernetes API server on loopback, for the monitor's Kubernetes code and kubectl.

It implements, with the real API's semantics, only what the monitor uses: discovery, apps/v1
Deployments and their `scale` subresource, coordination.k8s.io/v1 Leases and core/v1 Events.
Every write bumps one global resourceVersion (like etcd's revision); a write that carries a stale
resourceVersion gets 409, an unknown object 404, invalid replicas 422. Strategic-merge patches
are applied as JSON merge patches, which is the same for the plain fields used here. Tables are
served to kubectl (`Accept: ...;as=Table`) so `kubectl get` prints the usual columns.

Watches (`?watch=true` on a collection) stream `{"type": "ADDED"|"MODIFIED", "object": ...}`
lines over chunked HTTP, each object carrying the resourceVersion of its change: from the
`resourceVersion` given (every later change), or, without one, the current objects as ADDED and
then every change; until `timeoutSeconds` (default 60) or the server stops.

Faults for tests: `inject_conflict` makes another writer touch an object just before the next
write to it, and `fail_next` answers the next matching requests with an error status.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" is the core group
    version: str
    plural: str
    kind: str
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = Resource(
    "apps", "v1", "deployments", "Deployment", ("create", "get", "list", "patch", "update"), ("deploy",)
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", ("create", "get", "list", "update"))
EVENTS = Resource("", "v1", "events", "Event", ("create", "get", "list"), ("ev",))
RESOURCES = (DEPLOYMENTS, LEASES, EVENTS)
META_V1 = "meta.k8s.io/v1"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


class ApiError(Exception):
    """Answered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Json:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()
    return f"{int(seconds)}s" if seconds < 120 else f"{int(seconds // 60)}m"


@dataclass
class _Fault:
    status: int
    method: str | None
    path_contains: str | None
    times: int


@dataclass
class Request:
    method: str
    path: str
    content_type: str


@dataclass
class Store:
    """The objects, by (resource plural, namespace, name), and the global resourceVersion."""

    objects: dict[tuple[str, str, str], Json] = field(default_factory=dict)
    revision: int = 0
    conflicts_pending: dict[tuple[str, str, str], int] = field(default_factory=dict)
    conflicts_served: int = 0
    faults: list[_Fault] = field(default_factory=list)
    delay_s: float = 0.0  # every answer waits this long first (`slow`)
    requests: list[Request] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    events: list[tuple[int, str, str, Json]] = field(default_factory=list)  # revision, type, plural, object
    closed: bool = False

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def bump(self, obj: Json) -> Json:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        return obj

    def record(self, kind: str, plural: str, obj: Json) -> None:
        """A change watchers see (call with the lock held, after `bump`)."""
        self.events.append((self.revision, kind, plural, copy.deepcopy(obj)))
        self.changed.notify_all()


class Emulator:
    """The server and its store; use as a context manager or call `start`/`stop`."""

    def __init__(self) -> None:
        self.store = Store()
        self._bind(("127.0.0.1", 0))

    def _bind(self, address: tuple[str, int]) -> None:
        self._server = ThreadingHTTPServer(address, _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="k8s-emulator", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.store.lock:
            self.store.closed = True
            self.store.changed.notify_all()  # open watches end
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers -------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context points at this server (JSON is valid YAML)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def create_deployment(
        self, name: str, replicas: int, namespace: str = "default", annotations: dict[str, str] | None = None
    ) -> Json:
        labels = {"app.kubernetes.io/name": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations or {}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "worker", "image": "modm/worker:dev"}]},
                },
            },
        }
        return self.create(DEPLOYMENTS, namespace, body)

    def get(self, resource: Resource, namespace: str, name: str) -> Json:
        with self.store.lock:
            return copy.deepcopy(self._existing(resource, namespace, name))

    def list(self, resource: Resource, namespace: str | None = None) -> list[Json]:
        with self.store.lock:
            return [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self.store.objects.items())
                if plural == resource.plural and namespace in (None, ns)
            ]

    def inject_conflict(self, name: str, namespace: str = "default", times: int = 1) -> None:
        """Before each of the next `times` writes to this Deployment (or its scale), another writer
        touches it, so a write carrying the resourceVersion the client read gets 409."""
        with self.store.lock:
            self.store.conflicts_pending[(DEPLOYMENTS.plural, namespace, name)] = times

    @property
    def conflicts_served(self) -> int:
        return self.store.conflicts_served

    def fail_next(
        self, status: int = 503, *, method: str | None = None, path_contains: str | None = None, times: int = 1
    ) -> None:
        with self.store.lock:
            self.store.faults.append(_Fault(status, method, path_contains, times))

    def clear_faults(self) -> None:
        with self.store.lock:
            self.store.faults.clear()

    def slow(self, seconds: float) -> None:
        """Every later answer waits `seconds` first (0: back to normal)."""
        with self.store.lock:
            self.store.delay_s = seconds

    def go_down(self) -> None:
        """Stop, as a crashed API server: connections are refused until `come_back`."""
        self.stop()
        self._thread.join(10)

    def come_back(self) -> None:
        """Serve again on the same port, with the same objects."""
        with self.store.lock:
            self.store.closed = False
        self._bind(self._server.server_address[:2])  # type: ignore[arg-type]
        self.start()

    @property
    def requests(self) -> list[Request]:
        with self.store.lock:
            return list(self.store.requests)

    # -- semantics ----------------------------------------------------------------------------

    def _existing(self, resource: Resource, namespace: str, name: str) -> Json:
        obj = self.store.objects.get((resource.plural, namespace, name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{resource.qualified} "{name}" not found',
                {"name": name, "group": resource.group, "kind": resource.plural},
            )
        return obj

    def create(self, resource: Resource, namespace: str, body: Json) -> Json:
        with self.store.lock:
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise ApiError(422, "Invalid", f"{resource.kind} is invalid: metadata.name: Required value")
            key = (resource.plural, namespace, name)
            if key in self.store.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource.qualified} "{name}" already exists',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            obj = copy.deepcopy(body)
            obj.update(apiVersion=resource.api_version, kind=resource.kind)
            obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            _validate(resource, obj)
            _reconcile(resource, obj)
            self.store.objects[key] = self.store.bump(obj)
            self.store.record("ADDED", resource.plural, obj)
            return copy.deepcopy(obj)

    def write(self, resource: Resource, namespace: str, name: str, sub: str | None, new: Json) -> Json:
        """Replace the object (or its scale) with `new`, checking the resourceVersion it carries."""
        with self.store.lock:
            key = (resource.plural, namespace, name)
            current = self._existing(resource, namespace, name)
            injected = self.store.conflicts_pending.get(key, 0) > 0
            if injected:
                self.store.conflicts_pending[key] -= 1
                current["metadata"].setdefault("annotations", {})["emulator.modm.io/touched"] = _now()
                self.store.bump(current)
                self.store.record("MODIFIED", resource.plural, current)
            expected = (new.get("metadata") or {}).get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                self.store.conflicts_served += injected
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            if sub == "scale":
                replicas = (new.get("spec") or {}).get("replicas")
                _check_replicas("Scale", name, replicas)
                updated = merge_patch(current, {"spec": {"replicas": replicas}})
            else:
                updated = copy.deepcopy(new)
                updated.update(apiVersion=resource.api_version, kind=resource.kind)
                kept = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "namespace")}
                updated.setdefault("metadata", {}).update(kept, name=name)
                if resource is DEPLOYMENTS:
                    updated["status"] = current.get("status", {})
            _validate(resource, updated)
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
            _reconcile(resource, updated)
            self.store.objects[key] = self.store.bump(updated)
            self.store.record("MODIFIED", resource.plural, updated)
            return copy.deepcopy(updated)

    def changes(
        self, resource: Resource, namespace: str | None, after: int | None, selectors: tuple[str, str], timeout_s: float
    ) -> Iterator[tuple[str, Json]]:
        """What a watch sends: (type, object) after revision `after` (None: the current objects as
        ADDED first), waiting for more until `timeout_s` passes or the server stops."""
        deadline = time.monotonic() + timeout_s
        with self.store.lock:
            if after is None:
                after = self.store.revision
                initial = [obj for obj in self.list(resource, namespace) if _matches(obj, *selectors)]
            else:
                initial = []
        for obj in initial:
            yield "ADDED", obj
        while True:
            with self.store.lock:
                fresh = [
                    (kind, obj)
                    for revision, kind, plural, obj in self.store.events
                    if revision > after
                    and plural == resource.plural
                    and namespace in (None, obj["metadata"].get("namespace"))
                    and _matches(obj, *selectors)
                ]
                after = self.store.revision
                if not fresh:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.store.closed:
                        return
                    self.store.changed.wait(left)
                    continue
            for kind, obj in fresh:
                yield kind, copy.deepcopy(obj)

    def view(self, resource: Resource, namespace: str, name: str, sub: str | None) -> Json:
        obj = self.get(resource, namespace, name)
        return _scale_of(obj) if sub == "scale" else obj


def _check_replicas(kind: str, name: str, replicas: Any) -> None:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ApiError(
            422,
            "Invalid",
            f'{kind}.apps "{name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: '
            "must be a non-negative integer",
            {"name": name, "kind": kind, "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas"}]},
        )


def _validate(resource: Resource, obj: Json) -> None:
    if resource is DEPLOYMENTS:
        _check_replicas("Deployment", obj["metadata"]["name"], obj.get("spec", {}).get("replicas", 1))
    if resource is EVENTS:
        involved = obj.get("involvedObject") or {}
        if involved.get("namespace", obj["metadata"]["namespace"]) != obj["metadata"]["namespace"]:
            raise ApiError(422, "Invalid", "Event is invalid: involvedObject.namespace: does not match event.namespace")


def _reconcile(resource: Resource, obj: Json) -> None:
    """Stands in for the Deployment controller: every desired pod is at once up to date and ready."""
    if resource is DEPLOYMENTS:
        replicas = obj.setdefault("spec", {}).setdefault("replicas", 1)
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }


def _scale_of(deployment: Json) -> Json:
    meta = deployment["metadata"]
    labels = deployment["spec"].get("selector", {}).get("matchLabels", {})
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {
            "replicas": deployment["status"]["replicas"],
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }


def _field(obj: Json, dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _matches(obj: Json, label_selector: str, field_selector: str) -> bool:
    """Equality selectors only (`a=b,c!=d`), which is what kubectl and the tests send."""
    labels = obj["metadata"].get("labels") or {}
    for selector, lookup in ((label_selector, lambda k: labels.get(k)), (field_selector, lambda k: _field(obj, k))):
        for term in filter(None, selector.split(",")):
            negate = "!=" in term
            key, value = re.split(r"!=|==|=", term, maxsplit=1)
            if (lookup(key) == value) == negate:
                return False
    return True


_COLUMNS: dict[str, list[tuple[str, str, Any]]] = {
    "deployments": [
        ("Name", "string", lambda o: o["metadata"]["name"]),
        ("Ready", "string", lambda o: f"{o['status'].get('readyReplicas', 0)}/{o['spec']['replicas']}"),
        ("Up-to-date", "integer", lambda o: o["status"].get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: o["status"].get("availableReplicas", 0)),
        ("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp"))),
    ],
    "events": [
        ("Last Seen", "string", lambda o: _age(o.get("lastTimestamp"))),
        ("Type", "string", lambda o: o.get("type", "")),
        ("Reason", "string", lambda o: o.get("reason", "")),
        (
            "Object",
            "string",
            lambda o: f"{o['involvedObject'].get('kind', '').lower()}/{o['involvedObject'].get('name', '')}",
        ),
        ("Message", "string", lambda o: o.get("message", "")),
    ],
    "leases": [
        ("Name", "string", lambda o: o["metadata"]["name"]),
        ("Holder", "string", lambda o: o.get("spec", {}).get("holderIdentity") or ""),
        ("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp"))),
    ],
}


def _table(resource: Resource, items: list[Json], revision: int) -> Json:
    columns = _COLUMNS[resource.plural]
    return {
        "kind": "Table",
        "apiVersion": META_V1,
        "metadata": {"resourceVersion": str(revision)},
        "columnDefinitions": [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": "", "priority": 0}
            for n, t, _ in columns
        ],
        "rows": [
            {
                "cells": [cell(obj) for _, _, cell in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
            for obj in items
        ],
    }


def _resource_list(group_version: str) -> Json:
    resources = []
    for res in RESOURCES:
        if res.api_version != group_version:
            continue
        resources.append(
            {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": True,
                "kind": res.kind,
                "verbs": list(res.verbs),
                "shortNames": list(res.short_names),
            }
        )
        if res is DEPLOYMENTS:
            resources.append(
                {
                    "name": "deployments/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _group(name: str) -> Json:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [version], "preferredVersion": version}


def _discovery(path: str, server: str) -> Json | None:
    groups = sorted({r.group for r in RESOURCES if r.group})
    documents: dict[str, Json] = {
        "/version": {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0-modm-emulator",
            "platform": "linux/amd64",
        },
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        },
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in groups]},
        "/api/v1": _resource_list("v1"),
    }
    for g in groups:
        documents[f"/apis/{g}"] = _group(g)
        documents[f"/apis/{g}/v1"] = _resource_list(f"{g}/v1")
    return documents.get(path.rstrip("/") or "/")


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the tests read `requests` instead
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            store = emulator.store
            if store.closed:  # stopped: a kept-alive connection ends unanswered, as a dead server's would
                self.close_connection = True
                return
            if store.delay_s:
                time.sleep(store.delay_s)
            with store.lock:
                store.requests.append(Request(method, url.path, content_type))
                fault = next(
                    (
                        f
                        for f in store.faults
                        if f.times > 0
                        and f.method in (None, method)
                        and (f.path_contains is None or f.path_contains in url.path)
                    ),
                    None,
                )
                if fault:
                    fault.times -= 1
            try:
                if fault:
                    raise ApiError(
                        fault.status, "InternalError" if fault.status >= 500 else "TooManyRequests", "injected"
                    )
                body = json.loads(raw) if raw else None
                code, answer = self._route(method, url.path, parse_qs(url.query), content_type, body)
            except ApiError as error:
                code, answer = error.code, error.status()
            except json.JSONDecodeError as error:
                code, answer = 400, ApiError(400, "BadRequest", f"invalid JSON: {error}").status()
            self._reply(code, answer)

        def _watch(self, resource: Resource, ns: str | None, query: dict[str, list[str]]) -> None:
            """Streams the changes as chunked JSON lines (the reply is written here, not returned)."""
            since = query.get("resourceVersion", [""])[0]
            after = int(since) if since.isdigit() and since != "0" else None
            selectors = (query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0])
            timeout_s = float(query.get("timeoutSeconds", ["60"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for kind, obj in emulator.changes(resource, ns, after, selectors, timeout_s):
                    line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):  # the client stopped watching
                self.close_connection = True

        def _reply(self, code: int, answer: Json) -> None:
            if code == 0:  # already streamed
                return
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(
            self, method: str, path: str, query: dict[str, list[str]], content_type: str, body: Any
        ) -> tuple[int, Json]:
            if method == "GET" and (doc := _discovery(path, self.headers.get("Host", ""))) is not None:
                return 200, doc
            match = _PATH.match(path)
            group_version = "v1" if match and match["core"] else f"{match['group']}/{match['version']}" if match else ""
            resource = next(
                (r for r in RESOURCES if match and r.api_version == group_version and r.plural == match["plural"]),
                None,
            )
            if resource is None or match is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns, name, sub = match["ns"], match["name"], match["sub"]
            if sub not in (None, "scale") or (sub == "scale" and resource is not DEPLOYMENTS):
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
            watching = query.get("watch", ["false"])[0] in ("1", "t", "T", "TRUE", "true", "True")  # Go's ParseBool
            if watching and (name is not None or method != "GET"):
                raise ApiError(405, "MethodNotAllowed", "the emulator watches collections only")
            if watching:
                self._watch(resource, ns, query)
                return 0, {}
            if name is None:
                return self._collection(method, resource, ns, query, body)
            if ns is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if method == "GET":
                obj = emulator.view(resource, ns, name, sub)
                return 200, self._maybe_table(resource, [obj]) if sub is None else obj
            if method == "PUT":
                _require_object(body)
                emulator.write(resource, ns, name, sub, body)
                return 200, emulator.view(resource, ns, name, sub)
            if method == "PATCH":
                if content_type not in MERGE_PATCHES:
                    raise ApiError(415, "UnsupportedMediaType", f"the emulator does not apply {content_type} patches")
                _require_object(body)
                with emulator.store.lock:
                    current = emulator.view(resource, ns, name, sub)
                    patched = merge_patch(current, body)
                    # A patch carries a precondition only if it names a resourceVersion itself.
                    patched["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get("resourceVersion")
                    emulator.write(resource, ns, name, sub, patched)
                    return 200, emulator.view(resource, ns, name, sub)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {resource.plural}")

        def _collection(
            self, method: str, resource: Resource, ns: str | None, query: dict[str, list[str]], body: Any
        ) -> tuple[int, Json]:
            if method == "POST" and ns is not None:
                _require_object(body)
                return 201, emulator.create(resource, ns, body)
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
            labels, fields = query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0]
            items = [obj for obj in emulator.list(resource, ns) if _matches(obj, labels, fields)]
            if "as=Table" in (self.headers.get("Accept") or ""):
                return 200, _table(resource, items, emulator.store.revision)
            return 200, {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(emulator.store.revision)},
                "items": items,
            }

        def _maybe_table(self, resource: Resource, items: list[Json]) -> Json:
            if "as=Table" in (self.headers.get("Accept") or ""):
                return _table(resource, items, emulator.store.revision)
            return items[0]

    return Handler


def _require_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
