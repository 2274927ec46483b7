"""The OpenAI Images API on the live local stack (cache with MiniLM, tiny sd3 large worker, tiny
sdxl small worker, a router with its HTTP port and a token file), driven by the official
`openai` package, then fuzzed from its own /openapi.json by schemathesis.

The router's limits are tight (sides <= 128, <= 8 steps, n <= 2) so that every input the fuzzer
finds valid is cheap to generate on CPU. Tests run in file order; the last one stops the router.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from PIL import Image

import modm
from modm.images import encode_image
from modm.launch import ServiceProcess, free_port
from tests.integration.test_router_stack import MINILM_KS, ORIGINAL, PARAPHRASE, wait_for_pools
from tests.procs import start_cache, start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "openai-s3cret"
STEPS = 4
MODM_STEPS = {"num_inference_steps": STEPS}
DRAIN_DELAY_S = 3  # /readyz says 503 this long before the ports close
# Examples per operation and generation mode: the whole run stays under two minutes on CPU.
FUZZ_EXAMPLES = 12
FUZZ_GENERATIONS = 6
GENERATIONS = "POST /v1/images/generations"
EDITS = "POST /v1/images/edits"
FILES = "GET /v1/images/files/{image_id}"
SMALL_PNG = encode_image(Image.new("RGB", (64, 64), (30, 90, 200)))
KNOWN_GOOD = {
    GENERATIONS: ({"prompt": "a small blue boat", "size": "64x64", "num_inference_steps": 2}, "application/json"),
    EDITS: ({"image": SMALL_PNG, "prompt": "a boat", "size": "64x64", "num_inference_steps": 2}, "multipart/form-data"),
}


@dataclass
class Api:
    router: ServiceProcess
    http_port: int
    procs: list[ServiceProcess]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/readyz never turned ready")


@pytest.fixture(scope="module")
def api(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("openai-stack")
    tokens = root / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    cache = start_cache(root / "cache", root, log_format="text")
    large = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=2)
    small = start_worker(tiny_model("sdxl"), root, role="small", log_format="text", max_batch_size=2)
    procs = [cache, large, small]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        http_port = free_port()
        router = start_router(
            root,
            large.address,
            small.address,
            cache.address,
            http_port=http_port,
            tokens_file=tokens,
            max_side=128,
            max_steps=8,
            max_images_per_request=2,
            drain_delay_seconds=DRAIN_DELAY_S,
            cache_timeout_s=30,  # MiniLM on a busy CPU: a slow lookup must not turn the hit into a miss
        )
        procs.append(router)
        router.wait_serving()
        with modm.Client(router.address, token=TOKEN, timeout=60) as client:
            wait_for_pools(client, {"large", "small"})
        wait_ready(f"http://127.0.0.1:{http_port}")
        yield Api(router, http_port, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def oai(api: Api) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{api.base}/v1", api_key=TOKEN, max_retries=0, timeout=120) as client:
        yield client


def modm_of(item: Any) -> dict[str, Any]:
    return item.model_extra["modm"]


def png_of(b64: str | None) -> Image.Image:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generation_b64_json(oai: openai.OpenAI) -> None:
    reply = oai.images.generate(
        prompt="a lighthouse on a cliff, oil painting",
        size="128x96",
        response_format="b64_json",
        extra_body={**MODM_STEPS, "seed": 11, "cache": "off"},
    )
    (item,) = reply.data
    image = png_of(item.b64_json)
    assert image.format == "PNG" and image.size == (128, 96) and item.url is None
    meta = modm_of(item)
    assert meta["outcome"] == "bypassed" and meta["pool"] == "large" and meta["seed"] == 11
    assert meta["request_id"] and meta["model"] and meta["timings"]["generate_seconds"] > 0
    assert reply.created > 0 and reply.size == "128x96"


def test_generation_url_fetches_the_image(api: Api, oai: openai.OpenAI) -> None:
    reply = oai.images.generate(
        prompt="a lighthouse on a cliff, oil painting",
        response_format="url",
        output_format="jpeg",
        extra_body={**MODM_STEPS, "cache": "off"},
    )
    (item,) = reply.data
    assert item.b64_json is None and item.url and item.url.startswith(f"{api.base}/v1/images/files/")
    status, headers, data = http(item.url)  # no token: the URL itself is the capability
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_n_images_are_distinct_requests(oai: openai.OpenAI) -> None:
    reply = oai.images.generate(prompt="a bowl of ramen", n=2, extra_body={**MODM_STEPS, "seed": 40, "cache": "off"})
    metas = [modm_of(item) for item in reply.data]
    assert [m["seed"] for m in metas] == [40, 41]
    assert len({m["request_id"] for m in metas}) == 2
    assert reply.data[0].b64_json != reply.data[1].b64_json


def test_miss_then_paraphrase_hit(oai: openai.OpenAI) -> None:
    miss = modm_of(oai.images.generate(prompt=ORIGINAL, extra_body={**MODM_STEPS, "seed": 1}).data[0])
    assert miss["outcome"] == "miss" and miss["pool"] == "large" and miss["insert_scheduled"]

    def paraphrase() -> dict[str, Any]:  # no_insert keeps an early miss of the paraphrase out
        body = {**MODM_STEPS, "seed": 2, "cache": "no_insert"}
        return modm_of(oai.images.generate(prompt=PARAPHRASE, extra_body=body).data[0])

    deadline = time.monotonic() + 60  # the insert lands after the miss's reply
    hit = paraphrase()
    while hit["outcome"] == "miss" and time.monotonic() < deadline:
        time.sleep(0.5)
        hit = paraphrase()
    assert hit["outcome"] == "hit", (hit["cache_note"], hit["similarity"], hit)
    assert hit["pool"] == "small" and hit["similarity"] >= 0.85 and hit["source_entry_id"]
    assert hit["k"] in MINILM_KS and hit["total_steps"] == 50
    assert hit["strength"] == pytest.approx(MINILM_KS[hit["k"]]) and not hit["insert_scheduled"]
    assert hit["timings"]["fetch_seconds"] > 0


def test_edit_of_an_uploaded_image(oai: openai.OpenAI) -> None:
    upload = encode_image(Image.new("RGB", (96, 96), (200, 30, 30)))
    reply = oai.images.edit(
        image=("red.png", upload, "image/png"),
        prompt="a red square turned into a sunset",
        size="64x64",
        extra_body={**MODM_STEPS, "strength": 0.5, "seed": 5},
    )
    (item,) = reply.data
    assert png_of(item.b64_json).size == (64, 64)
    meta = modm_of(item)
    assert meta["outcome"] == "bypassed" and meta["strength"] == 0.5 and not meta["insert_scheduled"]
    assert meta["pool"] == "small" or meta["large_took_hit"]
    assert 1 <= meta["steps_run"] <= STEPS


def test_edit_refuses_what_is_not_an_image(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.edit(image=("x.png", b"not an image", "image/png"), prompt="p", extra_body=MODM_STEPS)
    assert caught.value.status_code == 400 and caught.value.param == "image"


def test_wrong_token_is_401(api: Api) -> None:
    bad = openai.OpenAI(base_url=f"{api.base}/v1", api_key="wrong", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as caught:
        bad.images.generate(prompt="a cat")
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "100"}, "size"),
        ({"size": "1024x1024"}, "size"),  # above this router's max_side
        ({"n": 3}, "n"),
        ({"extra_body": {"num_inference_steps": 50}}, "num_inference_steps"),
        ({"user": "not a tenant!"}, "user"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_validation_errors_name_the_parameter(oai: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.generate(**{"prompt": "a cat", **kwargs})
    error = caught.value
    assert error.status_code == 400 and error.param == param and error.type == "invalid_request_error"
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}


def test_error_shapes_on_the_wire(api: Api) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for status, headers, body in (
        http(f"{api.base}/v1/images/generations", b'{"prompt": "x"}', {"Content-Type": "application/json"}),
        http(f"{api.base}/v1/images/generations", b'{"prompt": 5, "n": "many"}', auth),
        http(f"{api.base}/v1/nothing-here", None, auth),
        http(f"{api.base}/v1/images/files/expired-or-never", None, {}),
    ):
        assert status in (400, 401, 404)
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert headers["content-type"] == "application/json"
        if status == 401:
            assert headers["www-authenticate"] == "Bearer"


def test_models_and_probes(api: Api, oai: openai.OpenAI) -> None:
    ids = {model.id for model in oai.models.list()}
    assert "modm" in ids and len(ids) >= 3  # the mixture plus the large and the small model
    assert http(f"{api.base}/healthz")[0] == 200 and http(f"{api.base}/readyz")[0] == 200
    status, _, text = http(f"{api.base}/metrics")
    assert status == 200 and b"modm_router_http_requests_total" in text and b"modm_router_requests_total" in text


def fuzz(api: Api, operation: Any, mode: schemathesis.GenerationMode, seen: dict[str, set[int]]) -> None:
    """Up to FUZZ_EXAMPLES generated inputs (fewer for generations, which cost a worker run);
    positive runs start with a known-good call so the success path is always among them."""

    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        seen.setdefault(operation.label, set()).add(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    test = hypothesis.given(case=operation.as_strategy(generation_mode=mode))(check)
    if mode is schemathesis.GenerationMode.POSITIVE and operation.label in KNOWN_GOOD:
        body, media_type = KNOWN_GOOD[operation.label]
        test = hypothesis.example(case=operation.Case(body=body, media_type=media_type))(test)
    hypothesis.settings(
        max_examples=FUZZ_GENERATIONS if operation.label == GENERATIONS else FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)()


def test_schemathesis_finds_no_server_error(api: Api) -> None:
    """Every operation of /openapi.json, positive and negative inputs: 4xx answers are in
    OpenAI's error shape, and nothing is a 5xx."""
    status, _, raw = http(f"{api.base}/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(json.loads(raw))
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and operation.label == FILES:
                continue  # its one parameter is any string: there is no negative input to make
            fuzz(api, operation, mode, seen)
    assert {200, 400} <= seen[GENERATIONS] and {200, 400} <= seen[EDITS], seen


def test_sigterm_drains_then_stops_both_ports(api: Api) -> None:
    """/readyz turns 503 during the drain delay while the port still answers, then both stop."""
    api.router.proc.send_signal(signal.SIGTERM)
    while True:
        try:
            status = http(f"{api.base}/readyz")[0]
        except OSError:
            pytest.fail("the HTTP port closed before /readyz said not ready")
        if status != 200:
            break
    assert status == 503 and http(f"{api.base}/healthz")[0] == 200
    assert api.router.proc.wait(60) == 0
    with pytest.raises(OSError):
        http(f"{api.base}/healthz")
