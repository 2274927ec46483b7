"""The FastAPI app of the OpenAI Images API. Thin: parse, call `RouterEngine.generate` (the
same path, limits and metrics as gRPC), shape the reply; errors go through `errors`.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at
runtime, and some name objects local to `create_app`."""

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modm.errors import ModmError
from modm.params import MAX_GUIDANCE
from modm.services.router import metrics
from modm.services.router.auth import Authenticator, Principal, TokenFile
from modm.services.router.engine import InitImage, RouterEngine, RouterResult
from modm.services.router.openai_api import errors
from modm.services.router.openai_api.mapping import MEDIA_TYPES, ImageCall, image_data, size_of, to_requests
from modm.services.router.openai_api.schemas import (
    MAX_SEED,
    SIZE_PATTERN,
    CacheMode,
    ErrorBody,
    GenerationRequest,
    ImageOptions,
    ImagesResponse,
    Model,
    ModelList,
    OutputFormat,
    ResponseFormat,
)
from modm.services.router.openai_api.store import ImageStore
from modm.services.router.ratelimit import TenantRateLimiter
from modm.services.router.settings import RouterSettings

log = logging.getLogger(__name__)

EDIT_STRENGTH = 0.6  # edits' default share of the schedule run on the caller's image
FORM_SLACK_BYTES = 1024 * 1024  # room for an edit's text fields beside its image
ROUTER_MODEL = "modm"  # the mixture itself: the router picks the model of each request

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Invalid request; `param` names the parameter",
        401: "Missing or unknown bearer token",
        403: "The credential may not act for the tenant `user` names",
        429: "Over capacity; retry after Retry-After seconds",
        503: "No worker can serve now",
        504: "The deadline passed",
    }.items()
}


class Readiness:
    """What /readyz reports: true once the router is SERVING, false again while it drains."""

    def __init__(self) -> None:
        self.ready = False


class _Edge:
    """Pure ASGI middleware: counts and times every call by route template, and refuses a
    declared body larger than `max_body` before it is read."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > self.max_body:
                error = errors.from_status(413, f"the body is {int(declared)} bytes, more than {self.max_body}")
                await _error_response(error)(scope, receive, observed_send)
            else:
                await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            metrics.HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)


def _error_response(error: errors.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def run_all(engine: RouterEngine, call: ImageCall, init: InitImage | None = None) -> list[RouterResult]:
    """The call's requests side by side; the first failure cancels the rest and is the answer."""
    tasks = [asyncio.create_task(engine.generate(raw, None, init=init)) for raw in call.requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def create_app(
    engine: RouterEngine,
    settings: RouterSettings,
    tokens: TokenFile | None,
    readiness: Readiness,
    store: ImageStore | None = None,
    limiter: TenantRateLimiter | None = None,
) -> FastAPI:
    """The app over `engine`; `tokens` and `limiter` are the very objects the gRPC port uses, so
    a token file rotation, a token's tenants and a tenant's request budget hold across both ports.
    uvicorn does not hand the client certificate to the app: with mutual TLS, HTTP callers are
    bound by their token, or act for the default tenant without one."""
    store = store or ImageStore(settings.image_url_ttl_s, settings.image_url_store_mb * 1024 * 1024)
    started = int(time.time())
    bearer = HTTPBearer(auto_error=False, description="A token of the router's tokens file.")
    auth = Authenticator(tokens, settings.default_tenant, client_certificates=settings.tls_client_ca_file is not None)

    def authenticate(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
        return auth.principal(credentials.credentials if credentials is not None else None)

    app = FastAPI(
        title="modm OpenAI-compatible Images API",
        version="1",
        description="OpenAI's Images API served by the modm router: the cache and the mixture of models "
        "underneath. Each image carries a `modm` object with how it was served.",
        redoc_url=None,
    )
    app.add_middleware(_Edge, max_body=int(settings.max_init_image_mb * 1024 * 1024) + FORM_SLACK_BYTES)

    @app.exception_handler(errors.ApiError)
    async def api_error(request: Request, error: errors.ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(ModmError)
    async def domain_error(request: Request, error: ModmError) -> JSONResponse:
        return _error_response(errors.from_domain(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(errors.from_validation(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error_response(errors.from_status(error.status_code, str(error.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=error)
        return _error_response(errors.internal())

    def bound(options: ImageOptions, caller: Principal) -> ImageOptions:
        """`options` acting for the tenant the credential allows (PermissionDenied before any work)."""
        return options.model_copy(update={"user": caller.tenant_for(options.user or "", settings.default_tenant)})

    def admit(call: ImageCall) -> None:
        """The gRPC port's per-tenant rate limit: one token per image, before any work."""
        if limiter is None:
            return
        for raw in call.requests:
            limiter.admit(raw.tenant)

    def respond(request: Request, call: ImageCall, results: list[RouterResult]) -> ImagesResponse:
        base = (settings.public_url or str(request.base_url)).rstrip("/")
        data = []
        for result in results:
            url = None
            if call.response_format is ResponseFormat.URL:
                url = f"{base}/v1/images/files/{store.put(result.image, MEDIA_TYPES[result.output_format])}"
            data.append(image_data(result, engine.cache_available, url))
        return ImagesResponse(
            created=int(time.time()), data=data, output_format=call.output_format, size=size_of(results)
        )

    authenticated = [Depends(authenticate)]
    common = {"response_model_exclude_none": True, "responses": ERROR_RESPONSES, "dependencies": authenticated}

    @app.post("/v1/images/generations", response_model=ImagesResponse, tags=["images"], **common)
    async def generations(
        body: GenerationRequest, request: Request, caller: Annotated[Principal, Depends(authenticate)]
    ) -> ImagesResponse:
        """Text to image through the cache: a near prompt's cached image is refined on the small
        pool (hit), anything else is generated by the large pool (miss)."""
        call = to_requests(bound(body, caller), settings.max_images_per_request)
        admit(call)
        return respond(request, call, await run_all(engine, call))

    @app.post("/v1/images/edits", response_model=ImagesResponse, tags=["images"], **common)
    async def edits(
        request: Request,
        caller: Annotated[Principal, Depends(authenticate)],
        image: Annotated[UploadFile, File(description="PNG, JPEG or WebP to start from.")],
        prompt: Annotated[str, Form()],
        n: Annotated[int | None, Form(ge=1)] = None,
        size: Annotated[str | None, Form(pattern=SIZE_PATTERN)] = None,
        response_format: Annotated[ResponseFormat | None, Form()] = None,
        output_format: Annotated[OutputFormat | None, Form()] = None,
        user: Annotated[str | None, Form()] = None,
        seed: Annotated[int | None, Form(ge=0, le=MAX_SEED)] = None,
        negative_prompt: Annotated[str | None, Form()] = None,
        guidance_scale: Annotated[float | None, Form(ge=0, le=MAX_GUIDANCE)] = None,
        num_inference_steps: Annotated[int | None, Form(ge=1)] = None,
        strength: Annotated[
            float | None,
            Form(gt=0, le=1, description=f"Share of the schedule run on the image; default {EDIT_STRENGTH}."),
        ] = None,
        model: Annotated[str | None, Form(description="Ignored: the router picks the model.")] = None,
    ) -> ImagesResponse:
        """img2img of the uploaded image on the small pool (the way cache hits are refined); the
        cache is neither read nor written."""
        options = ImageOptions(
            prompt=prompt,
            n=n,
            size=size,
            response_format=response_format,
            output_format=output_format,
            user=user,
            seed=seed,
            negative_prompt=negative_prompt,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            cache=CacheMode.OFF,
        )
        call = to_requests(bound(options, caller), settings.max_images_per_request)
        admit(call)
        init = InitImage(await image.read(), EDIT_STRENGTH if strength is None else strength)
        return respond(request, call, await run_all(engine, call, init))

    def models() -> list[Model]:
        pools_of: dict[str, set[str]] = {}
        for worker in engine.dispatcher.workers.values():
            if worker.healthy and worker.model_id:
                pools_of.setdefault(worker.model_id, set()).add(str(worker.pool))
        every = sorted({pool for pools in pools_of.values() for pool in pools})
        listed = [Model(id=ROUTER_MODEL, created=started, pools=every)]
        return listed + [Model(id=m, created=started, pools=sorted(p)) for m, p in sorted(pools_of.items())]

    @app.get("/v1/models", response_model=ModelList, tags=["models"], **common)
    async def list_models() -> ModelList:
        """`modm` (the router's mixture) and every model a healthy worker serves now."""
        return ModelList(data=models())

    @app.get("/v1/models/{model_id:path}", response_model=Model, tags=["models"], **common)
    async def get_model(model_id: str) -> Model:
        for model in models():
            if model.id == model_id:
                return model
        raise errors.ApiError(404, f"model {model_id!r} is not served", "invalid_request_error", "model", "not_found")

    @app.get(
        "/v1/images/files/{image_id}",
        tags=["images"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, 404: ERROR_RESPONSES[400]},
    )
    async def image_file(image_id: str) -> Response:
        """The bytes behind a `url` response, until it expires. The unguessable id is the
        credential (as with a presigned URL), so no token is needed."""
        stored = store.get(image_id)
        if stored is None:
            raise errors.ApiError(404, "no such image, or it expired", "invalid_request_error", None, "not_found")
        return Response(stored.data, media_type=stored.media_type, headers={"Cache-Control": "private, max-age=60"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if readiness.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
