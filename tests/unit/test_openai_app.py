"""The HTTP edge in-process (Starlette's TestClient) over a fake engine: routing, auth, error
shapes, url responses, readiness and metrics. The live stack is tests/integration/test_openai_api.py."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from starlette.testclient import TestClient

from modm.errors import InvalidArgument, ModmError, ResourceExhausted
from modm.images import encode_image
from modm.services.router.auth import TokenFile
from modm.services.router.dispatch import WorkerState
from modm.services.router.engine import InitImage, RouterResult
from modm.services.router.openai_api.app import Readiness, create_app
from modm.services.router.openai_api.store import ImageStore
from modm.services.router.policy import Outcome, Plan, Pool
from modm.services.router.ratelimit import TenantRateLimiter
from modm.services.router.settings import RouterSettings
from modm.services.router.validation import RawGenerate

TOKEN = "s3cret"
PNG = encode_image(Image.new("RGB", (8, 8), "red"))


class FakeEngine:
    """Answers like RouterEngine.generate; records what it was asked."""

    def __init__(self) -> None:
        self.cache_available = True
        self.calls: list[tuple[RawGenerate, InitImage | None]] = []
        self.error: ModmError | None = None
        self.dispatcher = SimpleNamespace(
            workers={
                "a:1": WorkerState("a:1", Pool.LARGE, 2, model_id="tiny-sd3"),
                "b:1": WorkerState("b:1", Pool.SMALL, 2, model_id="tiny-sdxl"),
                "c:1": WorkerState("c:1", Pool.SMALL, 2, model_id="gone", healthy=False),
            }
        )

    async def generate(
        self,
        raw: RawGenerate,
        client_timeout_s: float | None,
        listener: object = None,
        request_id: object = None,
        init: InitImage | None = None,
    ) -> RouterResult:
        self.calls.append((raw, init))
        if self.error is not None:
            raise self.error
        return RouterResult(
            request_id=f"r{len(self.calls)}",
            tenant=raw.tenant or "default",
            image=PNG,
            output_format=raw.params.output_format,  # type: ignore[arg-type]
            width=8,
            height=8,
            seed=raw.params.seed if raw.params.seed is not None else 7,
            steps_run=4,
            plan=Plan(Outcome.MISS, similarity=0.4, total_steps=50),
            pool="large",
            model_id="tiny-sd3",
            worker="a:1",
            attempts=1,
        )


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def readiness() -> Readiness:
    ready = Readiness()
    ready.ready = True
    return ready


@pytest.fixture
def client(engine: FakeEngine, readiness: Readiness, tmp_path: Path) -> Iterator[TestClient]:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# comment\n{TOKEN} default,team-a\n")
    settings = RouterSettings(large_workers=["a:1"], max_images_per_request=3, max_init_image_mb=0.5)
    app = create_app(engine, settings, TokenFile(tokens_file), readiness)  # type: ignore[arg-type]
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_generation_in_openai_shape_with_modm_metadata(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a cat", "seed": 3, "user": "team-a"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data", "output_format", "size"} and body["size"] == "8x8"
    (item,) = body["data"]
    assert "url" not in item and base64.b64decode(item["b64_json"]) == PNG
    assert item["modm"]["outcome"] == "miss" and item["modm"]["seed"] == 3 and item["modm"]["tenant"] == "team-a"
    assert item["modm"]["request_id"] == "r1" and item["modm"]["model"] == "tiny-sd3"
    assert engine.calls[0][0].params.prompt == "a cat" and engine.calls[0][1] is None


def test_n_images_are_separate_requests(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a cat", "n": 3, "seed": 1})
    assert [d["modm"]["seed"] for d in response.json()["data"]] == [1, 2, 3]
    assert len(engine.calls) == 3


def test_url_images_are_fetchable_without_a_token(client: TestClient) -> None:
    body = {"prompt": "a cat", "response_format": "url", "output_format": "jpeg"}
    (item,) = client.post("/v1/images/generations", json=body).json()["data"]
    assert "b64_json" not in item and item["url"].startswith("http://testserver/v1/images/files/")
    fetched = client.get(item["url"], headers={"Authorization": ""})
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
    missing = client.get("/v1/images/files/not-an-id")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


@pytest.mark.parametrize(("header", "reason"), [(None, "missing"), ("Bearer nope", "unknown"), ("Basic x", "missing")])
def test_auth_failures_are_401(client: TestClient, engine: FakeEngine, header: str | None, reason: str) -> None:
    headers = {"Authorization": header} if header else {"Authorization": ""}
    response = client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    error = error_of(response)
    assert error["code"] == "invalid_api_key" and reason in str(error["message"])
    assert client.get("/v1/models", headers=headers).status_code == 401
    assert not engine.calls


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 4}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "response_format": "gif"}, "response_format"),
        ({"prompt": "x", "cache": "sometimes"}, "cache"),
        ({"prompt": "x", "num_inference_steps": -2}, "num_inference_steps"),
        ({"prompt": "x", "seed": -1}, "seed"),
    ],
)
def test_bad_bodies_are_400_naming_the_parameter(client: TestClient, body: dict[str, object], param: str) -> None:
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/v1/images/generations", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"


def test_engine_errors_keep_their_status(client: TestClient, engine: FakeEngine) -> None:
    engine.error = InvalidArgument("params.steps", "200 is more than 150")
    refused = client.post("/v1/images/generations", json={"prompt": "x"})
    assert refused.status_code == 400 and error_of(refused)["param"] == "num_inference_steps"
    engine.error = ResourceExhausted("the miss queue is full", 4.5)
    busy = client.post("/v1/images/generations", json={"prompt": "x"})
    assert busy.status_code == 429 and busy.headers["retry-after"] == "5"
    assert error_of(busy)["code"] == "rate_limit_exceeded"


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    assert error_of(client.get("/v1/nothing"))["code"] == "not_found"
    wrong = client.get("/v1/images/generations")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"


def test_edit_sends_the_uploaded_image_with_its_strength(client: TestClient, engine: FakeEngine) -> None:
    response = client.post(
        "/v1/images/edits",
        files={"image": ("in.png", PNG, "image/png")},
        data={"prompt": "make it blue", "strength": "0.4", "size": "16x16", "n": "2"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    raw, init = engine.calls[0]
    assert init == InitImage(PNG, 0.4) and raw.params.width == 16 and raw.params.prompt == "make it blue"
    default = client.post("/v1/images/edits", files={"image": ("in.png", PNG, "image/png")}, data={"prompt": "p"})
    assert default.status_code == 200 and engine.calls[-1][1].strength == 0.6  # type: ignore[union-attr]


def test_edit_without_an_image_is_400(client: TestClient) -> None:
    response = client.post("/v1/images/edits", data={"prompt": "p"})
    assert response.status_code == 400 and error_of(response)["param"] == "image"


def test_a_body_over_the_upload_limit_is_413(client: TestClient, engine: FakeEngine) -> None:
    big = io.BytesIO(b"\0" * (2 * 1024 * 1024))
    response = client.post("/v1/images/edits", files={"image": ("in.png", big, "image/png")}, data={"prompt": "p"})
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"
    assert not engine.calls


def test_models_lists_the_mixture_and_the_served_models(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert {m["id"]: m["pools"] for m in listed["data"]} == {
        "modm": ["large", "small"],
        "tiny-sd3": ["large"],
        "tiny-sdxl": ["small"],
    }
    assert client.get("/v1/models/tiny-sdxl").json()["id"] == "tiny-sdxl"
    missing = client.get("/v1/models/gone")
    assert missing.status_code == 404 and error_of(missing)["param"] == "model"


def test_probes_schema_and_metrics_need_no_token(client: TestClient, readiness: Readiness) -> None:
    open_headers = {"Authorization": ""}
    assert client.get("/healthz", headers=open_headers).status_code == 200
    assert client.get("/readyz", headers=open_headers).status_code == 200
    readiness.ready = False
    assert client.get("/readyz", headers=open_headers).status_code == 503
    assert client.get("/healthz", headers=open_headers).status_code == 200
    schema = client.get("/openapi.json", headers=open_headers).json()
    assert {"/v1/images/generations", "/v1/images/edits", "/v1/models"} <= set(schema["paths"])
    client.post("/v1/images/generations", json={"prompt": "x"})
    text = client.get("/metrics", headers=open_headers).text
    assert 'modm_router_http_requests_total{method="POST",route="/v1/images/generations",status="200"}' in text


def test_store_expires_and_evicts_the_oldest() -> None:
    now = [0.0]
    store = ImageStore(ttl_s=10, max_bytes=10, clock=lambda: now[0])
    first = store.put(b"aaaa", "image/png")
    second = store.put(b"bbbb", "image/png")
    third = store.put(b"cccc", "image/png")  # 12 bytes > 10: the oldest goes
    assert store.get(first) is None and store.get(second) is not None and store.size_bytes == 8
    now[0] = 11.0
    assert store.get(second) is None and store.get(third) is None and store.size_bytes == 0
    with pytest.raises(InvalidArgument, match="response_format"):
        store.put(b"x" * 11, "image/png")


def test_the_grpc_tenant_rate_limit_applies_per_image(engine: FakeEngine, readiness: Readiness) -> None:
    settings = RouterSettings(large_workers=["a:1"], max_images_per_request=3)
    limiter = TenantRateLimiter(rate_per_s=0.01, burst=2, clock=lambda: 0.0)
    app = create_app(engine, settings, None, readiness, limiter=limiter)  # type: ignore[arg-type]
    with TestClient(app) as c:
        assert c.post("/v1/images/generations", json={"prompt": "x", "n": 2, "user": "team-a"}).status_code == 200
        refused = c.post("/v1/images/generations", json={"prompt": "x", "user": "team-a"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "100"
        assert error_of(refused)["type"] == "rate_limit_error" and len(engine.calls) == 2
        assert c.post("/v1/images/generations", json={"prompt": "x", "user": "team-b"}).status_code == 200
