"""Every public RPC of the worker, the cache and the router, fed hostile requests (hypothesis).

One stack per module: a cache (Milvus Lite, SeaweedFS, MiniLM), a tiny sd3 worker bounded to
128 px and 3 steps so that the valid cases that slip through are cheap, and a router over both;
every service accepts messages up to 2 MiB. Each case must end in OK or a clear refusal
(INVALID_ARGUMENT naming a field, RESOURCE_EXHAUSTED, NOT_FOUND for an unknown entry), never
INTERNAL or UNKNOWN; afterwards every service is still SERVING and answers a valid request, and
the cache holds nothing corrupt (every stored entry fetches as a decodable image, reconcile
finds no stale vector and no orphan object). Case counts are printed per RPC.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from modm.launch import ServiceProcess, health_status
from modm.services.worker.families import FAMILIES
from modm.v1 import cache_pb2, cache_pb2_grpc, common_pb2, router_pb2, router_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.hostile import (
    VALID_SMALL,
    Tally,
    float32s,
    float64s,
    fuzz_settings,
    hostile_images,
    hostile_text,
    mostly,
    text_up_to,
    uint32s,
    uint64s,
)
from tests.integration.cache_helpers import png, started_cache
from tests.integration.test_router_stack import start_router
from tests.procs import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TALLY = Tally("rpcs")
MAX_MESSAGE = 2 << 20
CALL_TIMEOUT = 300  # generous: a loaded CI machine makes even tiny generations slow
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Stack:
    cache: ServiceProcess
    worker: ServiceProcess
    router: ServiceProcess
    import_root: Path
    channels: list[grpc.Channel]

    def channel(self, address: str) -> grpc.Channel:
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.channels.append(channel)
        return channel


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hostile")
    import_root = root / "imports"
    (import_root / "ok").mkdir(parents=True)
    (import_root / "ok" / "a.png").write_bytes(png())
    (import_root / "ok" / "a.txt").write_text("an imported red square")
    limits = {"max_message_mb": 2, "log_format": "text"}
    cache = started_cache(root / "cache", root, import_root=import_root, **limits)
    worker = start_worker(
        tiny_model("sd3"), root, role="large", max_side=128, max_steps=3, max_batch_size=2, warmup=False, **limits
    )
    procs = [cache, worker]
    try:
        worker.wait_serving(timeout=300)
        router = start_router(
            root, worker.address, "", cache.address, max_side=128, max_steps=3, attempt_timeout_floor_s=600, **limits
        )
        procs.append(router)
        router.wait_serving()
        stack = Stack(cache, worker, router, import_root, [])
        yield stack
        for channel in stack.channels:
            channel.close()
    finally:
        for proc in reversed(procs):
            assert proc.stop() == 0, proc.log_tail()
    print("\n" + TALLY.report())


@pytest.fixture(scope="module")
def worker(stack: Stack) -> worker_pb2_grpc.WorkerStub:
    return worker_pb2_grpc.WorkerStub(stack.channel(stack.worker.address))


@pytest.fixture(scope="module")
def worker_info(worker: worker_pb2_grpc.WorkerStub) -> worker_pb2.WorkerInfo:
    return worker.Info(worker_pb2.InfoRequest(), timeout=CALL_TIMEOUT)


@pytest.fixture(scope="module")
def cache(stack: Stack) -> cache_pb2_grpc.CacheStub:
    return cache_pb2_grpc.CacheStub(stack.channel(stack.cache.address))


@pytest.fixture(scope="module")
def router(stack: Stack) -> router_pb2_grpc.RouterStub:
    return router_pb2_grpc.RouterStub(stack.channel(stack.router.address))


def expect_clear_answer(target: str, call: Callable[[], Any], also: set[grpc.StatusCode] = frozenset()) -> Any:
    """The reply, or None for a clear refusal; fails on anything else (INTERNAL, UNKNOWN, ...)."""
    try:
        reply = call()
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
        assert code in REFUSALS | also, f"{target}: {code.name}: {details}"
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            field, sep, problem = details.partition(": ")
            assert sep and field and problem and "object at 0x" not in details, details
        TALLY.count(target, code.name)
        return None
    TALLY.count(target, "OK")
    return reply


def assert_still_serving(proc: ServiceProcess) -> None:
    assert health_status(proc.address, timeout=10) == health_pb2.HealthCheckResponse.SERVING, proc.log_tail()


# --- strategies of messages ------------------------------------------------------------------------

FORMATS = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(4, 2**31 - 1), st.integers(-(2**31), -1))


PROMPTS = st.sampled_from(["a red fox", "  a lighthouse at dusk  ", "caf\u00e9 \U0001f600 at noon"])


@st.composite
def generation_params(draw: st.DrawFn) -> common_pb2.GenerationParams:
    """Every field plausible four times in five (see `mostly`), hostile otherwise."""
    message = common_pb2.GenerationParams(
        prompt=draw(mostly(PROMPTS, text_up_to(2000))),
        negative_prompt=draw(mostly(st.just(""), text_up_to(2000))),
        width=draw(mostly(st.sampled_from([0, 64]), uint32s)),
        height=draw(mostly(st.sampled_from([0, 64]), uint32s)),
        steps=draw(mostly(st.integers(1, 3), uint32s)),
    )
    message.output_format = draw(mostly(st.sampled_from([0, 1, 2, 3]), FORMATS))  # proto3 keeps unknown values
    if draw(st.booleans()):
        message.guidance_scale = draw(mostly(st.floats(0, 20, width=32), float32s))
    if draw(st.booleans()):
        message.seed = draw(mostly(st.integers(0, 2**63 - 1), uint64s))
    return message


def assert_served_as_asked(
    reply: Any, params: common_pb2.GenerationParams, info: worker_pb2.WorkerInfo, strength: float | None = None
) -> None:
    """An accepted request got what it asked for: its size (or the worker's default), an image
    that decodes at that size, and the steps the worker's family runs for it (img2img: the
    `strength` share of them, rounded as the family's pipeline rounds)."""
    if isinstance(reply, list):  # a stream: the result is its last event
        assert reply and reply[-1].WhichOneof("event") == "result", reply
        reply = reply[-1].result
    assert (reply.width, reply.height) == (params.width or info.default_width, params.height or info.default_height)
    assert Image.open(io.BytesIO(reply.image)).size == (reply.width, reply.height)
    steps = params.steps or info.default_steps
    if strength is not None:
        family = next(f for f in FAMILIES.values() if f.name == info.family)
        steps = family.img2img_steps(steps, strength)
    assert reply.steps_run == steps


def oversize(message: Any, field: str) -> Any:
    """The message with `field` padded beyond the services' 2 MiB receive limit."""
    setattr(message, field, (b"\x00" if isinstance(getattr(message, field), bytes) else "x") * (MAX_MESSAGE + 1))
    return message


# --- worker ------------------------------------------------------------------------------------------


@given(params=generation_params(), streaming=st.booleans())
@fuzz_settings(15)
def test_worker_text_to_image(
    worker: worker_pb2_grpc.WorkerStub,
    worker_info: worker_pb2.WorkerInfo,
    params: common_pb2.GenerationParams,
    streaming: bool,
) -> None:
    request = worker_pb2.TextToImageRequest(params=params)
    if streaming:
        reply = expect_clear_answer(
            "worker.TextToImageStream", lambda: list(worker.TextToImageStream(request, timeout=CALL_TIMEOUT))
        )
    else:
        reply = expect_clear_answer("worker.TextToImage", lambda: worker.TextToImage(request, timeout=CALL_TIMEOUT))
    if reply is not None:
        assert_served_as_asked(reply, params, worker_info)


@given(
    params=generation_params(),
    image=mostly(st.sampled_from(VALID_SMALL), hostile_images),
    strength=mostly(st.floats(0.5, 1, width=32), float32s),
    streaming=st.booleans(),
)
@fuzz_settings(25)
def test_worker_image_to_image(
    worker: worker_pb2_grpc.WorkerStub,
    worker_info: worker_pb2.WorkerInfo,
    params: common_pb2.GenerationParams,
    image: bytes,
    strength: float,
    streaming: bool,
) -> None:
    request = worker_pb2.ImageToImageRequest(params=params, init_image=image, strength=strength)
    if streaming:
        reply = expect_clear_answer(
            "worker.ImageToImageStream", lambda: list(worker.ImageToImageStream(request, timeout=CALL_TIMEOUT))
        )
    else:
        reply = expect_clear_answer("worker.ImageToImage", lambda: worker.ImageToImage(request, timeout=CALL_TIMEOUT))
    if reply is not None:
        assert_served_as_asked(reply, params, worker_info, request.strength)


@given(data=st.binary(max_size=64))
@fuzz_settings(20)
def test_worker_info_ignores_unknown_bytes(stack: Stack, data: bytes) -> None:
    info = stack.channel(stack.worker.address).unary_unary("/modm.v1.Worker/Info")
    expect_clear_answer("worker.Info (raw bytes)", lambda: info(data, timeout=CALL_TIMEOUT))


def test_worker_oversize_messages_are_resource_exhausted(worker: worker_pb2_grpc.WorkerStub, stack: Stack) -> None:
    request = oversize(worker_pb2.ImageToImageRequest(params=common_pb2.GenerationParams(prompt="x")), "init_image")
    for call in (worker.ImageToImage, lambda r, timeout: list(worker.ImageToImageStream(r, timeout=timeout))):
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=CALL_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "larger than max" in refused.value.details()  # type: ignore[attr-defined]
        TALLY.count("worker oversize", "RESOURCE_EXHAUSTED")
    assert_still_serving(stack.worker)
    ok = worker.TextToImage(
        worker_pb2.TextToImageRequest(params=common_pb2.GenerationParams(prompt="a calm sea", steps=1)),
        timeout=CALL_TIMEOUT,
    )
    assert ok.image and ok.steps_run == 1


# --- cache -------------------------------------------------------------------------------------------

tenants = mostly(st.sampled_from(["fuzz-a", "fuzz-b", "Fuzz.C_9"]), text_up_to(64))
entry_ids = st.one_of(st.sampled_from(["0" * 32, "f" * 32, "F" * 32]), hostile_text)


@given(
    tenant=tenants,
    prompt=mostly(PROMPTS, text_up_to(2000)),
    embedding=mostly(
        st.just([]), st.lists(float32s, max_size=8) | st.sampled_from([[0.0] * 384, [1.0] * 384, [float("nan")] * 384])
    ),
    top_k=mostly(st.integers(0, 5), uint32s),
    params=st.none() | generation_params(),
    dry_run=st.booleans(),
)
@fuzz_settings(80)
def test_cache_lookup(
    cache: cache_pb2_grpc.CacheStub,
    tenant: str,
    prompt: str,
    embedding: list[float],
    top_k: int,
    params: common_pb2.GenerationParams | None,
    dry_run: bool,
) -> None:
    request = cache_pb2.LookupRequest(tenant=tenant, prompt=prompt, embedding=embedding, top_k=top_k, dry_run=dry_run)
    if params is not None:
        request.params.CopyFrom(params)
    reply = expect_clear_answer("cache.Lookup", lambda: cache.Lookup(request, timeout=CALL_TIMEOUT))
    if reply is not None:
        assert all(m.entry.tenant == tenant or m.entry.shared for m in reply.matches)


INSERTED: dict[str, str] = {}  # entry id -> tenant, of everything a fuzzed call stored


@given(
    tenant=tenants,
    prompt=mostly(PROMPTS, text_up_to(2000)),
    image=mostly(st.sampled_from(VALID_SMALL), hostile_images),
    model_id=mostly(st.just("large"), text_up_to(256)),
    params=st.none() | generation_params(),
    metadata=mostly(st.just({"job": "fuzz"}), st.dictionaries(hostile_text, text_up_to(1024), max_size=40)),
    shared=st.booleans(),
)
@fuzz_settings(80)
def test_cache_insert_then_fetch_and_delete(
    cache: cache_pb2_grpc.CacheStub,
    tenant: str,
    prompt: str,
    image: bytes,
    model_id: str,
    params: common_pb2.GenerationParams | None,
    metadata: dict[str, str],
    shared: bool,
) -> None:
    request = cache_pb2.InsertRequest(
        tenant=tenant, prompt=prompt, image=image, model_id=model_id, metadata=metadata, shared=shared
    )
    if params is not None:
        request.params.CopyFrom(params)
    reply = expect_clear_answer("cache.Insert", lambda: cache.Insert(request, timeout=CALL_TIMEOUT))
    if reply is None:
        return
    INSERTED[reply.entry_id] = tenant
    fetched = cache.Fetch(cache_pb2.FetchRequest(tenant=tenant, entry_id=reply.entry_id), timeout=CALL_TIMEOUT)
    assert fetched.image == image and fetched.entry.prompt == prompt.strip() and fetched.entry.tenant == tenant
    Image.open(io.BytesIO(fetched.image)).load()


@given(tenant=tenants, entry_id=entry_ids, delete=st.booleans())
@fuzz_settings(80)
def test_cache_fetch_and_delete_by_hostile_ids(
    cache: cache_pb2_grpc.CacheStub, tenant: str, entry_id: str, delete: bool
) -> None:
    if delete:
        request = cache_pb2.DeleteRequest(tenant=tenant, entry_id=entry_id)
        expect_clear_answer(
            "cache.Delete", lambda: cache.Delete(request, timeout=CALL_TIMEOUT), {grpc.StatusCode.NOT_FOUND}
        )
    else:
        request = cache_pb2.FetchRequest(tenant=tenant, entry_id=entry_id)
        expect_clear_answer(
            "cache.Fetch", lambda: cache.Fetch(request, timeout=CALL_TIMEOUT), {grpc.StatusCode.NOT_FOUND}
        )


@given(tenant=st.one_of(st.just(""), tenants), grace=mostly(st.none() | st.floats(60, 3600), float64s))
@fuzz_settings(40)
def test_cache_stats_and_reconcile(cache: cache_pb2_grpc.CacheStub, tenant: str, grace: float | None) -> None:
    stats = expect_clear_answer(
        "cache.Stats", lambda: cache.Stats(cache_pb2.StatsRequest(tenant=tenant), timeout=CALL_TIMEOUT)
    )
    if stats is not None:
        assert all(TENANT.match(t.tenant) for t in stats.tenants)
    request = cache_pb2.ReconcileRequest()
    if grace is not None:
        request.grace_seconds = grace
    reply = expect_clear_answer("cache.Reconcile", lambda: cache.Reconcile(request, timeout=CALL_TIMEOUT))
    if reply is not None:
        assert reply.stale_vectors_removed == 0 and reply.orphan_objects_removed == 0


PATH_TRICKS = st.sampled_from(
    ["ok", "ok/", "./ok", "../", "..", "../../etc", "/etc", "/", "ok/../..", "ok/../../etc", "~", "entries/", "entries",
     "", "ok\x00", "%2e%2e", "C:\\"]
)  # fmt: skip


@given(
    tenant=tenants,
    folder=st.none() | PATH_TRICKS | hostile_text,
    bucket_prefix=st.none() | PATH_TRICKS | hostile_text,
    bucket=st.one_of(st.just(""), st.sampled_from(["modm-cache", "Not_A_Bucket", "../x", "a" * 80]), hostile_text),
    model_id=st.one_of(st.just(""), text_up_to(256)),
    limit=uint32s,
)
@fuzz_settings(60)
def test_cache_import(
    cache: cache_pb2_grpc.CacheStub,
    tenant: str,
    folder: str | None,
    bucket_prefix: str | None,
    bucket: str,
    model_id: str,
    limit: int,
) -> None:
    request = cache_pb2.ImportRequest(tenant=tenant, bucket=bucket, model_id=model_id, limit=limit)
    if folder is not None:
        request.folder = folder
    elif bucket_prefix is not None:
        request.bucket_prefix = bucket_prefix
    # A well-formed bucket name the S3 server does not have: UNAVAILABLE, saying why.
    also = {grpc.StatusCode.UNAVAILABLE} if bucket and bucket_prefix is not None else set()
    reply = expect_clear_answer("cache.Import", lambda: cache.Import(request, timeout=CALL_TIMEOUT), also)
    if reply is not None:
        for entry_id in reply.entry_ids:
            INSERTED[entry_id] = tenant


def test_cache_oversize_messages_are_resource_exhausted(cache: cache_pb2_grpc.CacheStub, stack: Stack) -> None:
    for request, call in (
        (oversize(cache_pb2.InsertRequest(tenant="big", prompt="x", model_id="m"), "image"), cache.Insert),
        (oversize(cache_pb2.LookupRequest(tenant="big"), "prompt"), cache.Lookup),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=CALL_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        TALLY.count("cache oversize", "RESOURCE_EXHAUSTED")
    assert_still_serving(stack.cache)


def test_cache_holds_nothing_corrupt_after_the_fuzzing(cache: cache_pb2_grpc.CacheStub, stack: Stack) -> None:
    """Every entry a fuzzed call stored is whole, and nothing else was stored."""
    assert_still_serving(stack.cache)
    stats = cache.Stats(cache_pb2.StatsRequest(), timeout=CALL_TIMEOUT)
    assert all(TENANT.match(t.tenant) for t in stats.tenants)
    live = 0
    for entry_id, tenant in INSERTED.items():
        try:
            fetched = cache.Fetch(cache_pb2.FetchRequest(tenant=tenant, entry_id=entry_id), timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.NOT_FOUND  # deleted by a fuzzed Delete  # type: ignore[attr-defined]
            continue
        live += 1
        Image.open(io.BytesIO(fetched.image)).load()
        assert fetched.entry.size_bytes == len(fetched.image)
    assert stats.total.entries == live
    reconciled = cache.Reconcile(cache_pb2.ReconcileRequest(grace_seconds=0), timeout=CALL_TIMEOUT)
    assert reconciled.stale_vectors_removed == reconciled.orphan_objects_removed == 0
    ok = cache.Insert(
        cache_pb2.InsertRequest(tenant="after", prompt="a valid entry after the fuzz", image=png(), model_id="m"),
        timeout=CALL_TIMEOUT,
    )
    cache.Delete(cache_pb2.DeleteRequest(tenant="after", entry_id=ok.entry_id), timeout=CALL_TIMEOUT)


# --- router ------------------------------------------------------------------------------------------

POLICIES = st.one_of(st.sampled_from([0, 1, 2, 3, 4]), st.integers(5, 2**31 - 1), st.integers(-(2**31), -1))


@given(
    params=generation_params(),
    tenant=st.one_of(st.just(""), tenants),
    policy=mostly(st.sampled_from([0, 1, 2, 3, 4]), POLICIES),
    streaming=st.booleans(),
)
@fuzz_settings(25)
def test_router_generate(
    router: router_pb2_grpc.RouterStub,
    params: common_pb2.GenerationParams,
    tenant: str,
    policy: int,
    streaming: bool,
) -> None:
    request = router_pb2.GenerateRequest(params=params, tenant=tenant)
    request.cache_policy = policy
    if streaming:
        events = expect_clear_answer(
            "router.GenerateStream", lambda: list(router.GenerateStream(request, timeout=CALL_TIMEOUT))
        )
        reply = events[-1].result if events else None
    else:
        reply = expect_clear_answer("router.Generate", lambda: router.Generate(request, timeout=CALL_TIMEOUT))
    if reply is not None:
        assert TENANT.match(reply.tenant) and Image.open(io.BytesIO(reply.image)).size == (reply.width, reply.height)


@given(data=st.binary(max_size=256), method=st.sampled_from(["Generate", "Stats"]))
@fuzz_settings(40)
def test_router_raw_bytes(stack: Stack, data: bytes, method: str) -> None:
    """Arbitrary bytes as the request: truncated fields and strings that are not UTF-8 included."""
    call = stack.channel(stack.router.address).unary_unary(f"/modm.v1.Router/{method}")
    expect_clear_answer(f"router.{method} (raw bytes)", lambda: call(data, timeout=CALL_TIMEOUT))


@pytest.mark.parametrize(("method", "service"), [("Insert", "cache"), ("Lookup", "cache"), ("ImageToImage", "worker")])
def test_raw_bytes_that_are_not_utf8_are_invalid_argument(stack: Stack, method: str, service: str) -> None:
    """Field 2 (prompt, or init_image for the worker: there field 1's params) with invalid UTF-8."""
    address = stack.cache.address if service == "cache" else stack.worker.address
    name = "Cache" if service == "cache" else "Worker"
    data = b"\x0a\x04\x0a\x02\xff\xfe" if service == "worker" else b"\x12\x02\xff\xfe"
    call = stack.channel(address).unary_unary(f"/modm.v1.{name}/{method}")
    with pytest.raises(grpc.RpcError) as refused:
        call(data, timeout=CALL_TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value  # type: ignore[attr-defined]
    assert refused.value.details().startswith("request: ")  # type: ignore[attr-defined]
    TALLY.count(f"{service}.{method} (invalid UTF-8)", "INVALID_ARGUMENT")


def test_router_oversize_and_still_serving(router: router_pb2_grpc.RouterStub, stack: Stack) -> None:
    request = router_pb2.GenerateRequest(params=oversize(common_pb2.GenerationParams(), "prompt"))
    with pytest.raises(grpc.RpcError) as refused:
        router.Generate(request, timeout=CALL_TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    TALLY.count("router oversize", "RESOURCE_EXHAUSTED")
    for proc in (stack.router, stack.worker, stack.cache):
        assert_still_serving(proc)
    ok = router.Generate(
        router_pb2.GenerateRequest(params=common_pb2.GenerationParams(prompt="a quiet valley", steps=1)),
        timeout=CALL_TIMEOUT,
    )
    assert ok.image and ok.tenant == "default"
    assert router.Stats(router_pb2.RouterStatsRequest(), timeout=CALL_TIMEOUT).requests > 0
