"""Tenants are who the credential says, on real processes (cache, a tiny worker, routers) with
certificates this test generates.

One router requires bearer tokens bound to tenants (`tok-a tenant-a`, `tok-b tenant-b`,
`tok-op *`) and client certificates, on gRPC and on its HTTP port; another requires only client
certificates, whose `modm://tenant/NAME` SAN URIs bind them. Every attempt to act for another
tenant (a Generate naming it, an exact repeat of its prompt, a stream, the OpenAI `user` field)
is PERMISSION_DENIED / 403 and reaches neither the cache nor a worker; operator credentials act
for both. Two more routers show that a rate limit is each replica's own.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

import modm
from modm.client import PermissionDeniedError
from modm.launch import ServiceProcess, free_port
from modm.tls import ClientTls
from modm.v1 import cache_pb2, cache_pb2_grpc, router_pb2, router_pb2_grpc
from tests.integration.cache_helpers import started_cache
from tests.integration.test_router_stack import wait_for_pools
from tests.integration.test_security_tls import Authority, Pair, wait_serving
from tests.integration.test_tenant_isolation import wait_for_entry
from tests.procs import start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SECRETS = {
    "tenant-a": "the private prompt of tenant-a: a red bicycle in a garden",
    "tenant-b": "the private prompt of tenant-b: a blue bicycle in a tunnel",
}
SIZE = {"steps": 1, "width": 64, "height": 64}  # cheap generations: the credentials are what is tested
TOKENS = "# bound tokens\ntok-a tenant-a\ntok-b tenant-b\ntok-op *\n"


@dataclass
class Bound:
    ca: Authority
    certs: dict[str, Pair]
    cache: cache_pb2_grpc.CacheStub
    worker: ServiceProcess
    tokens_router: ServiceProcess  # tokens bound to tenants, mTLS, the HTTP port
    http_url: str
    certs_router: ServiceProcess  # mTLS only: certificates bind tenants
    entries: dict[str, str]  # tenant -> the entry id of its secret

    def client(self, router: ServiceProcess, cert: str, token: str | None = None) -> modm.Client:
        pair = self.certs[cert]
        return modm.Client(
            router.address,
            token=token,
            root_certificates=self.ca.ca_file.read_bytes(),
            client_certificate=pair.cert.read_bytes(),
            client_key=pair.key.read_bytes(),
            retries=0,
            timeout=300,
        )

    def http(self, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
        """POST /v1/images/generations over mutual TLS (a certificate that names no tenant)."""
        context = ssl.create_default_context(cafile=self.ca.ca_file)
        context.load_cert_chain(self.certs["plain"].cert, self.certs["plain"].key)
        request = urllib.request.Request(
            f"{self.http_url}/v1/images/generations",
            data=json.dumps({"size": "64x64", "num_inference_steps": 1, **body}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=300, context=context) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def lookups(self) -> int:
        return int(self.cache.Stats(cache_pb2.StatsRequest(), timeout=30).total.lookups)


@pytest.fixture(scope="module")
def bound(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bound]:
    root = tmp_path_factory.mktemp("credentials")
    ca = Authority(root, "tenant-ca")
    server = ca.issue("router", dns=["localhost"], ips=["127.0.0.1"])
    certs = {
        "plain": ca.issue("plain-client", client=True),  # names no tenant
        "a": ca.issue("client-a", client=True, uris=["modm://tenant/tenant-a"]),
        "b": ca.issue("client-b", client=True, uris=["modm://tenant/tenant-b"]),
        "cn-b": ca.issue("tenant-b", client=True),  # its subject CN is a tenant's name: not read
        "op": ca.issue("client-op", client=True, uris=["modm://tenant/*"]),
    }
    tokens = root / "tokens"
    tokens.write_text(TOKENS)
    mtls = {"tls_cert_file": server.cert, "tls_key_file": server.key, "tls_client_ca_file": ca.ca_file}
    cache = started_cache(root / "cache", root)
    worker = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=4, warmup=False)
    procs = [cache, worker]
    channel = grpc.insecure_channel(cache.address)
    try:
        worker.wait_serving(timeout=300)
        http_port = free_port()
        slow = {"attempt_timeout_floor_s": 600}  # a loaded CI machine is slow: no attempt is abandoned
        tokens_router = start_router(
            root, worker.address, "", cache.address, tokens_file=tokens, http_port=http_port, **mtls, **slow
        )
        procs.append(tokens_router)
        certs_router = start_router(root, worker.address, "", cache.address, **mtls, **slow)
        procs.append(certs_router)
        for router in (tokens_router, certs_router):
            wait_serving(router.address, ClientTls(ca.ca_file, certs["plain"].cert, certs["plain"].key), router)
        stub = cache_pb2_grpc.CacheStub(channel)
        state = Bound(
            ca, certs, stub, worker, tokens_router, f"https://127.0.0.1:{http_port}", certs_router, entries={}
        )
        for token, tenant in (("tok-a", "tenant-a"), ("tok-b", "tenant-b")):
            with state.client(tokens_router, "plain", token) as client:
                wait_for_pools(client, {"large"})
                assert client.generate(SECRETS[tenant], seed=1, **SIZE).tenant == tenant  # names none: its own
            state.entries[tenant] = wait_for_entry(stub, tenant, SECRETS[tenant])
        yield state
    finally:
        channel.close()
        for proc in reversed(procs):
            assert proc.stop() == 0, proc.log_tail()


def assert_denied(call: Callable[[], object], tenant: str) -> None:
    with pytest.raises(PermissionDeniedError) as refused:
        call()
    assert refused.value.code == "PERMISSION_DENIED" and f"tenant {tenant}" in refused.value.details, refused.value


def cross_tenant_calls(client: modm.Client, other: str) -> list[Callable[[], object]]:
    """Every way a gRPC caller could ask for `other`'s entries: its exact repeat, streamed or not."""
    return [
        lambda: client.generate(SECRETS[other], tenant=other, **SIZE),
        lambda: client.generate(SECRETS[other], tenant=other, seed=1, cache_policy="no_store", **SIZE),
        lambda: list(client.generate_stream(SECRETS[other], tenant=other, **SIZE)),
    ]


def completed(client: modm.Client) -> int:
    return sum(w["completed"] for w in client.stats()["workers"])


def test_a_token_cannot_act_for_another_tenant(bound: Bound) -> None:
    before = bound.lookups()
    router = bound.tokens_router
    with bound.client(router, "plain", "tok-a") as a, bound.client(router, "plain", "tok-b") as b:
        work = completed(a)
        for client, other in ((a, "tenant-b"), (b, "tenant-a")):
            for call in cross_tenant_calls(client, other):
                assert_denied(call, other)
        for token, other in (("tok-a", "tenant-b"), ("tok-b", "tenant-a")):
            status, refused = bound.http(token, prompt=SECRETS[other], user=other)
            assert status == 403 and refused["error"]["code"] == "permission_denied", refused
            assert refused["error"]["param"] == "user" and f"tenant {other}" in refused["error"]["message"]
        assert bound.lookups() == before and completed(a) == work  # neither the cache nor a worker was asked
        own = b.generate(SECRETS["tenant-b"], **SIZE)  # names none: the token's tenant
        assert own.tenant == "tenant-b" and own.outcome == "exact_repeat"
        assert own.source_entry_id == bound.entries["tenant-b"]
        unnamed = a.generate(SECRETS["tenant-b"], cache_policy="no_store", **SIZE)  # b's prompt, a's namespace
        assert unnamed.tenant == "tenant-a" and unnamed.outcome != "exact_repeat"
        assert unnamed.source_entry_id != bound.entries["tenant-b"]


def test_an_operator_token_acts_for_every_tenant(bound: Bound) -> None:
    with bound.client(bound.tokens_router, "plain", "tok-op") as operator:
        for tenant in ("tenant-a", "tenant-b"):
            result = operator.generate(SECRETS[tenant], tenant=tenant, **SIZE)
            assert result.outcome == "exact_repeat" and result.source_entry_id == bound.entries[tenant]
    status, served = bound.http("tok-op", prompt=SECRETS["tenant-b"], user="tenant-b")
    assert status == 200 and served["data"][0]["modm"]["outcome"] == "exact_repeat", served


def test_client_certificates_bind_tenants_by_their_uris_only(bound: Bound) -> None:
    router = bound.certs_router
    before = bound.lookups()
    with bound.client(router, "a") as a, bound.client(router, "b") as b, bound.client(router, "cn-b") as cn_b:
        for client, other in ((a, "tenant-b"), (b, "tenant-a"), (cn_b, "tenant-b"), (cn_b, "tenant-a")):
            for call in cross_tenant_calls(client, other):
                assert_denied(call, other)
        assert bound.lookups() == before
        for client, tenant in ((a, "tenant-a"), (b, "tenant-b")):
            result = client.generate(SECRETS[tenant], **SIZE)  # names none: the certificate's tenant
            assert result.tenant == tenant and result.source_entry_id == bound.entries[tenant]
        anonymous = cn_b.generate("a certificate that names no tenant", cache_policy="off", **SIZE)
        assert anonymous.tenant == "default"
    with bound.client(router, "op") as operator:
        for tenant in ("tenant-a", "tenant-b"):
            result = operator.generate(SECRETS[tenant], tenant=tenant, **SIZE)
            assert result.outcome == "exact_repeat" and result.source_entry_id == bound.entries[tenant]


def test_a_token_and_a_certificate_allow_only_what_both_allow(bound: Bound) -> None:
    router = bound.tokens_router
    with bound.client(router, "a", "tok-op") as narrowed:
        assert narrowed.generate(SECRETS["tenant-a"], **SIZE).source_entry_id == bound.entries["tenant-a"]
        assert_denied(lambda: narrowed.generate(SECRETS["tenant-b"], tenant="tenant-b", **SIZE), "tenant-b")
    with bound.client(router, "b", "tok-a") as disjoint:
        for tenant in ("tenant-a", "tenant-b"):
            assert_denied(lambda t=tenant: disjoint.generate(SECRETS[t], tenant=t, **SIZE), tenant)  # type: ignore[misc]
        assert_denied(lambda: disjoint.generate("no tenant named", **SIZE), "default")


def test_router_stats_show_a_tenant_nothing_of_another(bound: Bound) -> None:
    """Stats are fleet-wide (rates, queues, workers), never per tenant: any credential may read them."""
    with bound.client(bound.tokens_router, "plain", "tok-a") as a:
        text = repr(a.stats())
    assert "tenant-b" not in text and SECRETS["tenant-b"] not in text


def test_a_rate_limit_is_each_router_replicas_own(bound: Bound) -> None:
    """Two replicas, burst 2 each: a tenant spreading its calls over both gets 2 x 2 through."""
    limits = {"tenant_rate_per_s": 0.001, "tenant_burst": 2}
    root = bound.ca.folder
    replicas = [start_router(root, bound.worker.address, "", None, **limits) for _ in range(2)]
    try:
        codes = []
        for replica in replicas:
            replica.wait_serving()
            with grpc.insecure_channel(replica.address) as channel:
                stub = router_pb2_grpc.RouterStub(channel)
                for _ in range(3):  # charged before validation refuses the empty prompt: no generation
                    try:
                        stub.Generate(router_pb2.GenerateRequest(tenant="limited"), timeout=30)
                    except grpc.RpcError as error:
                        codes.append(error.code())  # type: ignore[attr-defined]
        invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
        assert codes == [invalid, invalid, exhausted] * 2
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log_tail()
