"""The whole request path on real processes: cache (Milvus Lite, SeaweedFS, MiniLM), a tiny
large worker (sd3) and a tiny small worker (sdxl), a router, driven through the SDK.

Tests run in file order on one stack; the last ones stop the cache and kill the large worker.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import modm
from modm.client import InvalidArgumentError, Queued, Started, Step, UnauthenticatedError
from modm.launch import ServiceProcess, free_port, health_status
from tests.procs import start_cache, start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 4
# A paraphrase pair from the cache's MiniLM probe set (similarity >= 0.85: a hit, k 15..30).
ORIGINAL = "a photo of a red sports car parked on a city street at night"
PARAPHRASE = "a red sports car on a street in the city, night photo"
MINILM_KS = {5: 0.9, 10: 0.8, 15: 0.7, 25: 0.5, 30: 0.4}


@dataclass
class Stack:
    cache: ServiceProcess
    large: ServiceProcess
    small: ServiceProcess
    router: ServiceProcess
    log_dir: Path
    metrics_port: int


def wait_for_pools(client: modm.Client, pools: set[str], timeout: float = 60.0) -> None:
    """Until the router's discovery has a healthy worker in each pool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = client.stats()
        ready = {p["pool"] for p in report["pools"] if p["workers"] > 0}
        if pools <= ready:
            return
        time.sleep(0.2)
    raise TimeoutError(f"pools {pools} not all ready: {report['pools']}")


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("router-stack")
    cache = start_cache(root / "cache", root, log_format="text")
    large = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=2)
    small = start_worker(tiny_model("sdxl"), root, role="small", log_format="text", max_batch_size=2)
    procs = [cache, large, small]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        metrics_port = free_port()
        router = start_router(root, large.address, small.address, cache.address, metrics_port=metrics_port)
        procs.append(router)
        router.wait_serving()
        yield Stack(cache, large, small, router, root, metrics_port)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[modm.Client]:
    with modm.Client(stack.router.address, timeout=120) as c:
        wait_for_pools(c, {"large", "small"})
        yield c


def worker_completed(client: modm.Client) -> dict[str, int]:
    return {w["address"]: w["completed"] for w in client.stats()["workers"]}


def test_miss_then_paraphrase_hit_on_the_small_pool(stack: Stack, client: modm.Client) -> None:
    miss = client.generate(ORIGINAL, steps=STEPS, seed=1)
    assert miss.outcome == "miss" and miss.pool == "large" and miss.worker == stack.large.address
    assert miss.cache_available and miss.insert_scheduled and not miss.degraded
    assert (miss.width, miss.height) == (128, 128) and miss.image.size == (128, 128)
    assert miss.embedder.startswith("minilm") or miss.embedder == ""

    # The insert happens after the reply; no_store keeps an early miss of the paraphrase out.
    deadline = time.monotonic() + 30
    hit = client.generate(PARAPHRASE, steps=STEPS, seed=2, cache_policy="no_store")
    while hit.outcome == "miss" and time.monotonic() < deadline:
        time.sleep(0.5)
        hit = client.generate(PARAPHRASE, steps=STEPS, seed=2, cache_policy="no_store")
    assert hit.outcome == "hit", hit.metadata()
    assert hit.pool == "small" and hit.worker == stack.small.address and not hit.large_took_hit
    assert hit.similarity >= 0.85 and hit.source_entry_id
    assert hit.skipped_steps in MINILM_KS and hit.total_steps == 50
    assert hit.strength == pytest.approx(MINILM_KS[hit.skipped_steps])
    assert hit.strength == pytest.approx(1 - hit.skipped_steps / 50)
    assert 1 <= hit.steps_run <= STEPS and not hit.insert_scheduled
    assert hit.timings["fetch_seconds"] > 0 and hit.timings["lookup_seconds"] > 0


def test_exact_repeat_needs_no_worker(stack: Stack, client: modm.Client) -> None:
    before = worker_completed(client)
    first = client.generate(ORIGINAL, steps=STEPS, seed=1)
    again = client.generate(ORIGINAL, steps=STEPS)  # no seed: any cached seed will do
    for result in (first, again):
        assert result.outcome == "exact_repeat" and result.pool == "cache" and result.worker == ""
        assert result.strength == 0 and result.similarity == pytest.approx(1.0)
        assert result.image.size == (128, 128) and result.seed == 1
    assert worker_completed(client) == before
    jpeg = client.generate(ORIGINAL, steps=STEPS, seed=1, output_format="jpeg")
    assert jpeg.outcome == "exact_repeat" and jpeg.format == "jpeg" and jpeg.image.format == "JPEG"


def test_opt_out_bypasses_the_cache(client: modm.Client) -> None:
    result = client.generate(ORIGINAL, steps=STEPS, seed=1, cache_policy="off")
    assert result.outcome == "bypassed" and result.pool == "large" and not result.insert_scheduled
    assert result.similarity == -1 and result.timings["lookup_seconds"] == 0


def test_stream_events_arrive_in_order(client: modm.Client) -> None:
    events = list(client.generate_stream("a watercolor of a quiet harbor", steps=STEPS, cache_policy="off"))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Queued" and kinds[1] == "Started" and kinds[-1] == "GenerateResult"
    steps = [e.step for e in events if isinstance(e, Step)]
    assert steps == list(range(1, STEPS + 1))
    queued, started = events[0], events[1]
    assert isinstance(queued, Queued) and queued.pool == "large" and queued.outcome == "bypassed"
    assert isinstance(started, Started) and started.total_steps == STEPS and started.attempt == 1
    assert events[-1].outcome == "bypassed"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "   "}, "params.prompt"),
        ({"prompt": "x", "width": 100_000}, "params.width"),
        ({"prompt": "x", "width": 100, "height": 128}, "params.width"),  # not a multiple (worker)
        ({"prompt": "x", "guidance_scale": -1.0}, "params.guidance_scale"),
        ({"prompt": "x", "steps": 100_000}, "params.steps"),
        ({"prompt": "x", "tenant": "no spaces allowed"}, "tenant"),
    ],
)
def test_bad_inputs_name_the_field(client: modm.Client, kwargs: dict[str, object], field: str) -> None:
    prompt = str(kwargs.pop("prompt"))
    with pytest.raises(InvalidArgumentError) as caught:
        client.generate(prompt, cache_policy="off", **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "INVALID_ARGUMENT" and caught.value.field == field, caught.value


def test_stats_report_what_the_monitor_needs(client: modm.Client) -> None:
    report = client.stats()
    assert report["requests"] >= 6 and report["request_rate_per_min"] > 0
    assert 0 < report["hit_rate"] < 1 and report["exact_repeat_rate"] > 0
    assert report["k_distribution"] and 0 < report["kappa"] < 1
    assert {p["pool"] for p in report["pools"]} == {"large", "small"}
    large = next(w for w in report["workers"] if w["pool"] == "large")
    assert large["completed"] >= 2 and large["mean_service_seconds"] > 0 and large["profiled_seconds_per_step"] > 0


def test_auth_on_the_public_port(stack: Stack, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated monthly\ns3cret-one\ns3cret-two\n")
    router = start_router(stack.log_dir, stack.large.address, stack.small.address, None, tokens_file=tokens)
    try:
        router.wait_serving()  # health stays open without a token
        with modm.Client(router.address, retries=0) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.generate("x", steps=1)
        with modm.Client(router.address, token="wrong", retries=0) as wrong, pytest.raises(UnauthenticatedError):
            wrong.stats()
        with modm.Client(router.address, token="s3cret-two") as good:
            wait_for_pools(good, {"large"})
            result = good.generate("a small boat", steps=2)
            assert result.outcome == "miss" and not result.cache_available
            assert "no cache" in result.cache_note
        events = []
        with modm.Client(router.address, retries=0) as anonymous, pytest.raises(UnauthenticatedError):
            events.extend(anonymous.generate_stream("x", steps=1))
        assert events == []
    finally:
        assert router.stop() == 0


async def test_async_client_generates_streams_and_reports(stack: Stack, client: modm.Client) -> None:
    async with modm.AsyncClient(stack.router.address, timeout=120) as aclient:
        first, second = await asyncio.gather(
            aclient.generate("an async test of a red kite", steps=STEPS, seed=11, cache_policy="off"),
            aclient.generate("an async test of a blue kite", steps=STEPS, seed=12, cache_policy="off"),
        )
        assert {first.outcome, second.outcome} == {"bypassed"}
        assert first.image.size == second.image.size == (128, 128)
        events = [event async for event in aclient.generate_stream("an async stream", steps=STEPS, cache_policy="off")]
        assert type(events[0]).__name__ == "Queued" and type(events[-1]).__name__ == "GenerateResult"
        assert (await aclient.stats())["pools"]


def test_tls_on_the_public_port(stack: Stack, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    router = start_router(
        stack.log_dir, stack.large.address, stack.small.address, None, tls_cert_file=cert, tls_key_file=key
    )
    try:
        with modm.Client(router.address, tls=True, root_certificates=cert.read_bytes(), timeout=60) as secure:
            deadline = time.monotonic() + 60
            while True:  # the router process is still importing; the client's own retries are short
                try:
                    wait_for_pools(secure, {"large"})
                    break
                except modm.client.UnavailableError:
                    assert time.monotonic() < deadline, router.log_tail()
                    time.sleep(0.5)
            assert secure.generate("a boat under a bridge", steps=2).image.size == (128, 128)
        with modm.Client(router.address, retries=0, timeout=5) as plain, pytest.raises(modm.client.ModmClientError):
            plain.stats()
    finally:
        assert router.stop() == 0


def test_prometheus_metrics_count_outcomes_and_workers(stack: Stack, client: modm.Client) -> None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    assert samples['modm_router_requests_total{outcome="miss",pool="large",result="ok"}'] >= 1
    assert samples['modm_router_requests_total{outcome="hit",pool="small",result="ok"}'] >= 1
    assert samples['modm_router_requests_total{outcome="exact_repeat",pool="cache",result="ok"}'] >= 1
    assert samples['modm_router_workers{pool="large"}'] == samples['modm_router_workers{pool="small"}'] == 1
    assert samples["modm_router_cache_available"] == 1


# The tests below stop the cache and kill the large worker: keep them last.
def test_cache_stopped_serves_misses_and_says_so(stack: Stack, client: modm.Client) -> None:
    assert stack.cache.stop() == 0
    result = client.generate(ORIGINAL, steps=STEPS, seed=1)  # was an exact repeat
    assert result.outcome == "miss" and result.pool == "large"
    assert not result.cache_available and "UNAVAILABLE" in result.cache_note
    assert client.stats()["cache_available"] is False


def test_worker_killed_mid_request_is_retried_elsewhere(stack: Stack, client: modm.Client) -> None:
    events: list[object] = []
    killed = threading.Event()

    def consume() -> None:
        for event in client.generate_stream("a slow painting of a forest", steps=60, cache_policy="off"):
            events.append(event)
            if isinstance(event, Step) and not killed.is_set():
                stack.large.proc.send_signal(signal.SIGKILL)
                killed.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    consumer.join(timeout=120)
    assert killed.is_set() and not consumer.is_alive()
    result = events[-1]
    assert isinstance(result, modm.GenerateResult), events[-3:]
    assert result.attempts == 2 and result.pool == "small" and result.degraded
    assert result.worker == stack.small.address and result.image.size == (128, 128)
    attempts = [e.attempt for e in events if isinstance(e, Queued)]
    assert attempts == [1, 2]
    assert health_status(stack.router.address) is not None
    assert client.stats()["retries"] >= 1
