"""Security of a whole stack on real processes, with certificates this test generates.

The router serves its public port over mutual TLS and requires bearer tokens; the cache and the
worker require client certificates too (mTLS between services), with a certificate that names
the internal service, not the address the router dials (`upstream_tls_server_name`). Checked:
valid clients get through end to end; clients without a certificate, with one from another CA,
or over plaintext are refused at the handshake; token rotation takes effect without a restart;
an unauthenticated request reaches no worker and leaves nothing in the cache.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

import modm
from modm.cli.main import app
from modm.client import ModmClientError, UnauthenticatedError
from modm.launch import ServiceProcess
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsClient
from modm.tls import ClientTls, open_channel
from modm.v1 import cache_pb2, cache_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.procs import start_cache, start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERNAL_NAME = "modm-internal.svc"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def bytes(self) -> tuple[bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes()


class Authority:
    """A throwaway CA that signs server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = folder / f"{name}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
        )

    def issue(
        self,
        name: str,
        *,
        dns: list[str] = (),  # type: ignore[assignment]
        ips: list[str] = (),  # type: ignore[assignment]
        client: bool = False,
        uris: list[str] = (),  # type: ignore[assignment]
    ) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]  # e.g. modm://tenant/NAME
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(self.key, hashes.SHA256())
        pair = Pair(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return pair


@dataclass
class Secured:
    ca: Authority
    rogue: Authority
    client: Pair
    rogue_client: Pair
    tokens: Path
    cache: ServiceProcess
    worker: ServiceProcess
    router: ServiceProcess

    def router_client(self, token: str | None, pair: Pair | None = None, **kwargs: object) -> modm.Client:
        cert, key = (pair or self.client).bytes()
        return modm.Client(
            self.router.address,
            token=token,
            root_certificates=self.ca.ca_file.read_bytes(),
            client_certificate=cert,
            client_key=key,
            **kwargs,  # type: ignore[arg-type]
        )

    def internal(self, pair: Pair | None) -> ClientTls:
        return ClientTls(self.ca.ca_file, pair.cert if pair else None, pair.key if pair else None, INTERNAL_NAME)


def wait_serving(address: str, tls: ClientTls, proc: ServiceProcess, timeout: float = 300.0) -> None:
    """As ServiceProcess.wait_serving, over TLS."""
    deadline = time.monotonic() + timeout
    with open_channel(grpc, address, [], tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.log_tail()
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise TimeoutError(proc.log_tail())


@pytest.fixture(scope="module")
def secured(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    ca, rogue = Authority(root, "modm-ca"), Authority(root, "rogue-ca")
    internal = ca.issue("internal", dns=[INTERNAL_NAME])  # no IP: the router must name it
    public = ca.issue("router", dns=["localhost"], ips=["127.0.0.1"])
    router_as_client = ca.issue("router-client", client=True)
    client, rogue_client = ca.issue("sdk-client", client=True), rogue.issue("rogue-client", client=True)
    tokens = root / "tokens"
    tokens.write_text("first-token tls-a\n")  # bound to the tenant its calls name
    mtls = {"tls_cert_file": internal.cert, "tls_key_file": internal.key, "tls_client_ca_file": ca.ca_file}
    cache = start_cache(root / "cache", root, log_format="text", **mtls)
    worker = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_steps=4, warmup=False, **mtls)
    procs = [cache, worker]
    try:
        secured = Secured(ca, rogue, client, rogue_client, tokens, cache, worker, worker)
        for proc in (cache, worker):
            wait_serving(proc.address, secured.internal(router_as_client), proc)
        router = start_router(
            root,
            worker.address,
            "",
            cache.address,
            tokens_file=tokens,
            tls_cert_file=public.cert,
            tls_key_file=public.key,
            tls_client_ca_file=ca.ca_file,
            upstream_tls_ca_file=ca.ca_file,
            upstream_tls_cert_file=router_as_client.cert,
            upstream_tls_key_file=router_as_client.key,
            upstream_tls_server_name=INTERNAL_NAME,
        )
        procs.append(router)
        secured.router = router
        wait_serving(router.address, ClientTls(ca.ca_file, client.cert, client.key), router)
        yield secured
    finally:
        for proc in reversed(procs):
            assert proc.stop() == 0, proc.log_tail()


def wait_for_worker(client: modm.Client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(p["workers"] for p in client.stats()["pools"]):
        assert time.monotonic() < deadline, "the router never reached its worker over mTLS"
        time.sleep(0.3)


def test_valid_clients_are_served_end_to_end_over_mtls(secured: Secured) -> None:
    with secured.router_client("first-token", timeout=300) as client:
        wait_for_worker(client)
        result = client.generate("a harbour at night, secured", steps=2, tenant="tls-a", seed=3)
        assert result.outcome == "miss" and result.cache_available, result.metadata()  # the cache, over mTLS
        assert result.image.size == (128, 128)
        with open_channel(grpc, secured.cache.address, [], secured.internal(secured.client)) as channel:
            cache = cache_pb2_grpc.CacheStub(channel)
            deadline = time.monotonic() + 120
            while not cache.Stats(cache_pb2.StatsRequest(tenant="tls-a"), timeout=10).total.entries:
                assert time.monotonic() < deadline, "the router's insert never reached the cache over mTLS"
                time.sleep(0.5)
        again = client.generate("a harbour at night, secured", steps=2, tenant="tls-a")
        assert again.outcome == "exact_repeat" and again.seed == 3, again.metadata()


@pytest.mark.parametrize("who", ["no client certificate", "another CA's certificate", "plaintext"])
def test_the_public_port_refuses_clients_without_a_valid_certificate(secured: Secured, who: str) -> None:
    roots = secured.ca.ca_file.read_bytes()
    if who == "no client certificate":
        client = modm.Client(
            secured.router.address, token="first-token", root_certificates=roots, retries=0, timeout=10
        )
    elif who == "another CA's certificate":
        client = secured.router_client("first-token", secured.rogue_client, retries=0, timeout=10)
    else:
        client = modm.Client(secured.router.address, token="first-token", retries=0, timeout=10)
    with client, pytest.raises(ModmClientError) as refused:
        client.stats()
    assert refused.value.code == "UNAVAILABLE", refused.value  # the handshake failed: no RPC ran


@pytest.mark.parametrize("service", ["cache", "worker"])
def test_internal_services_refuse_clients_without_a_valid_certificate(secured: Secured, service: str) -> None:
    proc = secured.cache if service == "cache" else secured.worker

    def call(tls: ClientTls | None) -> grpc.StatusCode:
        with open_channel(grpc, proc.address, [], tls) as channel:
            try:
                if service == "cache":
                    cache_pb2_grpc.CacheStub(channel).Stats(cache_pb2.StatsRequest(), timeout=10)
                else:
                    worker_pb2_grpc.WorkerStub(channel).Info(worker_pb2.InfoRequest(), timeout=10)
            except grpc.RpcError as error:
                return error.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK

    assert call(secured.internal(None)) is grpc.StatusCode.UNAVAILABLE
    assert call(secured.internal(secured.rogue_client)) is grpc.StatusCode.UNAVAILABLE
    assert call(None) is grpc.StatusCode.UNAVAILABLE
    assert call(ClientTls(secured.ca.ca_file, secured.client.cert, secured.client.key)) is grpc.StatusCode.UNAVAILABLE
    assert call(secured.internal(secured.client)) is grpc.StatusCode.OK  # right CA, right name


def test_unauthenticated_requests_touch_nothing(secured: Secured) -> None:
    tenant = f"anon-{uuid.uuid4().hex[:8]}"
    with secured.router_client("first-token") as good:
        before = good.stats()
    internal = secured.internal(secured.client)
    with open_channel(grpc, secured.cache.address, [], internal) as channel:
        cache = cache_pb2_grpc.CacheStub(channel)
        totals = cache.Stats(cache_pb2.StatsRequest(), timeout=10).total
        for token in (None, "wrong-token", "first-token-but-longer"):
            with secured.router_client(token, retries=0) as client:
                for call in (
                    lambda: client.generate("an unauthorised painting", steps=1, tenant=tenant),
                    lambda: list(client.generate_stream("an unauthorised stream", steps=1, tenant=tenant)),
                    client.stats,
                ):
                    with pytest.raises(UnauthenticatedError):
                        call()
        after_cache = cache.Stats(cache_pb2.StatsRequest(), timeout=10)
    assert tenant not in {t.tenant for t in after_cache.tenants}
    assert (after_cache.total.lookups, after_cache.total.inserts) == (totals.lookups, totals.inserts)
    with secured.router_client("first-token") as good:
        after = good.stats()
    assert after["requests"] == before["requests"]
    assert [w["completed"] for w in after["workers"]] == [w["completed"] for w in before["workers"]]


def test_the_cli_presents_a_client_certificate(secured: Secured) -> None:
    base = ["stats", "--json", "--endpoint", secured.router.address, "--token", "first-token", "--tls"]
    base += ["--ca-file", str(secured.ca.ca_file)]
    runner = CliRunner()
    served = runner.invoke(app, [*base, "--cert-file", str(secured.client.cert), "--key-file", str(secured.client.key)])
    assert served.exit_code == 0 and json.loads(served.stdout)["pools"], served.output
    refused = runner.invoke(app, base)
    assert refused.exit_code == 1 and "UNAVAILABLE" in refused.output


def test_rotated_tokens_take_effect_without_a_restart(secured: Secured) -> None:
    pid = secured.router.proc.pid
    staged = secured.tokens.with_suffix(".new")
    staged.write_text("# rotated\nsecond-token\n")
    staged.replace(secured.tokens)  # what a Secret update does: a new file swapped in atomically
    with secured.router_client("second-token", timeout=30) as new:
        assert new.stats()["pools"]
    with secured.router_client("first-token", retries=0) as old, pytest.raises(UnauthenticatedError):
        old.stats()
    secured.tokens.write_text("third-token\nsecond-token\n")  # an in-place rewrite, both valid for a while
    with secured.router_client("third-token") as third, secured.router_client("second-token") as second:
        assert third.stats() and second.stats()
    assert secured.router.proc.pid == pid and secured.router.proc.poll() is None


async def test_the_monitor_reads_a_router_that_requires_mtls_and_a_token(secured: Secured) -> None:
    def reader(**tls: object) -> StatsClient:
        settings = MonitorSettings(
            routers=[secured.router.address], router_token_file=secured.tokens, scaler="local", **tls
        )
        return StatsClient(
            settings.routers, timeout_s=10, token_file=settings.router_token_file, tls=settings.router_tls()
        )

    trusted = reader(
        router_tls_ca_file=secured.ca.ca_file,
        router_tls_cert_file=secured.client.cert,
        router_tls_key_file=secured.client.key,
    )
    plaintext = reader()
    try:
        reading = await trusted.read()
        assert list(reading.stats) == [secured.router.address] and not reading.unreachable
        refused = await plaintext.read()
        assert not refused.stats and secured.router.address in refused.unreachable  # reported, not dropped
    finally:
        await trusted.close()
        await plaintext.close()
