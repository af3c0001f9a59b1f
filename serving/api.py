"""The HTTP routes of the recommendation service (FastAPI), over any `Backend`.

The same app serves the one-deployment layout (the backend is the model deployment itself)
and the composed layout (the backend forwards to the model deployment through a handle), and
it runs in tests without Ray (`fastapi.testclient.TestClient(build_api(backend))`).

Bad input never reaches the model: FastAPI/pydantic reject malformed JSON, wrong types,
out-of-range values, oversized lists and unknown fields with a 422 whose `detail[].loc`
names the field (the `message` field says the same in one line); requests that are valid
JSON but cannot be served (a retriever the bundle lacks) get a 400.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.schemas import Health, ModelInfo, RecommendRequest, RecommendResponse


class Rejection(BaseModel):
    """A request that passed validation but cannot be served; becomes a 400."""

    field: str
    message: str


class Backend(Protocol):
    async def recommend(self, request: RecommendRequest) -> RecommendResponse | Rejection: ...

    async def model_info(self) -> ModelInfo: ...

    async def health(self) -> Health: ...


def _where(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        return f"body: malformed JSON at character {loc[-1] if loc else '?'} ({detail})"
    return f"{_where(loc)}: {error.get('msg')}"


async def _http_error(request: Request, exc: Exception) -> Any:
    """FastAPI answers a body it cannot even decode (bytes that are not UTF-8 JSON) with a
    bare 400; it is a malformed body like any other, so it gets the same 422 shape (the
    OpenAPI document declares 400 for `Rejection` only). Other HTTP errors pass through."""
    assert isinstance(exc, HTTPException)
    if exc.status_code != 400:
        return await http_exception_handler(request, exc)
    error = {"loc": ["body"], "msg": str(exc.detail), "type": "body_unreadable"}
    return JSONResponse(
        status_code=422, content={"detail": [error], "message": f"body: {exc.detail}"}
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The offending input is not echoed back: it can be a 1000-item list.
    errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
    message = "; ".join(_describe(e) for e in errors)
    return JSONResponse(
        status_code=422, content={"detail": jsonable_encoder(errors), "message": message}
    )


def build_api(backend: Backend) -> FastAPI:
    """FastAPI app with `POST /v1/recommend`, `GET /v1/model` and `GET /healthz`."""
    app = FastAPI(
        title="recsys-mol recommendations",
        description="Next-item recommendations from a sequential model with a learned "
        "similarity (Mixture of Logits). Item and user ids are the original keys.",
        version="1",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)

    @app.post(
        "/v1/recommend",
        response_model=RecommendResponse,
        responses={400: {"model": Rejection}, 422: {"description": "Invalid request body"}},
    )
    async def recommend(body: RecommendRequest) -> Any:
        answer = await backend.recommend(body)
        if isinstance(answer, Rejection):
            return JSONResponse(
                status_code=400,
                content={"detail": answer.message, "field": answer.field},
            )
        return answer

    @app.get("/v1/model", response_model=ModelInfo)
    async def model() -> ModelInfo:
        return await backend.model_info()

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return await backend.health()

    return app
