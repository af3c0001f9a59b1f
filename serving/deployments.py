"""Ray Serve deployments: the model service (batched, hot-swappable) and its HTTP ingress.

`RecommenderService` is a plain class (tested without Ray): it loads a Recommender once in
`__init__`, answers concurrent requests in batches (`@serve.batch`: one encoder call and one
retriever call per batch), swaps bundles in `reconfigure(user_config)` and reports in
`check_health`. It doubles as its own FastAPI ingress (`__serve_build_asgi_app__`), which is
the one-deployment layout; `Ingress` + `RecommenderService` behind a handle is the composed
layout. `NoopService` is the same stack without a model: the benchmark's baseline.

Hot swap: the new bundle is loaded completely (in a worker thread, so requests keep being
served) before one reference is switched; a batch reads that reference once, so in-flight
requests finish on the model they started with. A bundle that fails to load is rejected:
the error is logged and shown in `GET /v1/model`, and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from recsys.malloc import tune_malloc
from recsys.recommend import (
    DEFAULT_RAILS_BUDGET,
    RETRIEVERS,
    Recommender,
    RecRequest,
    RecResult,
    RequestError,
)
from serving.api import Rejection, build_api
from serving.noop import NoopRecommender
from serving.schemas import Health, ModelInfo, RecommendRequest, RecommendResponse

# Serve's own logger: its records land in the replica logs next to the request logs.
logger = logging.getLogger("ray.serve")

DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.002
# Users whose stored-history query stays cached (about 2 KB each for MoL 8 x 64).
DEFAULT_QUERY_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class ServiceConfig:
    """What a model replica serves; also the shape of the deployment's `user_config`.

    bundle_path: bundle directory; default_retriever: "exact" or "rails";
    max_batch_size / batch_wait_timeout_s: `@serve.batch` settings; torch_threads: intra-op
    threads of the replica (the app builder matches the replica's num_cpus, since the proxy
    needs a core too; None leaves torch's setting alone); rails_budget: candidates the
    rails retriever rescores per query (None = the retrieval default); query_cache_size:
    users whose stored-history query is kept between requests (0 = none); model_thread:
    run each batch in a worker thread, so the event loop keeps accepting requests meanwhile,
    instead of inline on the event loop. Inline is the default: in a worker thread the model
    and the event loop contend for the GIL between torch calls. On the 2-core machine inline
    answered more requests/s at 32 concurrent clients behind both proxies, the thread more
    at 8 behind HAProxy (benchmarks/results/serve-ml-1m.json, layouts "single" and
    "threaded").
    """

    bundle_path: str
    default_retriever: str = "rails"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S
    torch_threads: int | None = None
    rails_budget: int | None = DEFAULT_RAILS_BUDGET
    query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE
    model_thread: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bundle_path, str) or not self.bundle_path:
            raise ValueError(f"bundle_path: expected a non-empty path, got {self.bundle_path!r}")
        if self.default_retriever not in RETRIEVERS:
            raise ValueError(
                f"default_retriever: expected one of {RETRIEVERS}, got {self.default_retriever!r}"
            )
        if not 1 <= self.max_batch_size <= 1024:
            raise ValueError(f"max_batch_size: expected 1..1024, got {self.max_batch_size}")
        if not isinstance(self.model_thread, bool):
            raise ValueError(f"model_thread: expected true or false, got {self.model_thread!r}")
        if not isinstance(self.query_cache_size, int) or self.query_cache_size < 0:
            raise ValueError(f"query_cache_size: expected >= 0, got {self.query_cache_size!r}")
        if not 0 <= self.batch_wait_timeout_s <= 1:
            raise ValueError(
                f"batch_wait_timeout_s: expected 0..1 s, got {self.batch_wait_timeout_s}"
            )
        for name in ("torch_threads", "rails_budget"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected an integer >= 1 or null, got {value!r}")

    def updated(self, user_config: dict[str, Any]) -> ServiceConfig:
        """This config with the keys of `user_config` replaced (unknown keys are an error)."""
        if not isinstance(user_config, dict):
            raise ValueError(f"user_config: expected a mapping, got {type(user_config).__name__}")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(user_config) - known)
        if unknown:
            raise ValueError(f"user_config: unknown keys {unknown} (known: {sorted(known)})")
        return dataclasses.replace(self, **user_config)


def _model_key(config: ServiceConfig) -> tuple[Any, ...]:
    """The settings that need a new Recommender when they change."""
    return (
        config.bundle_path,
        config.default_retriever,
        config.rails_budget,
        config.query_cache_size,
    )


class RecommenderService:
    """The model replica: batched recommendations from the current Recommender."""

    def __init__(self, config: ServiceConfig | dict[str, Any]) -> None:
        self.config = config if isinstance(config, ServiceConfig) else ServiceConfig(**config)
        tune_malloc()  # see recsys.malloc: small-batch model calls, no page-fault churn
        self._apply_threads()
        # A broken bundle at start-up is fatal: there is no old model to fall back to.
        self.recommender = self._load(self.config)
        self.last_reload_error: str | None = None
        self._apply_batch_settings()

    def _load(self, config: ServiceConfig) -> Recommender | NoopRecommender:
        return Recommender.load(
            config.bundle_path,
            default_retriever=config.default_retriever,
            rails_budget=config.rails_budget,
            query_cache_size=config.query_cache_size,
        )

    def _apply_threads(self) -> None:
        if self.config.torch_threads is not None:
            torch.set_num_threads(self.config.torch_threads)

    def _apply_batch_settings(self) -> None:
        # The batch queue belongs to the decorated function (one replica per process).
        batched = RecommenderService._batched
        batched.set_max_batch_size(self.config.max_batch_size)  # type: ignore[attr-defined]
        batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new user_config; load and switch to a new bundle if it names one."""
        try:
            new = self.config.updated(user_config)
        except (TypeError, ValueError) as e:
            self._reject(f"invalid user_config {user_config!r}: {e}")
            return
        if _model_key(new) != _model_key(self.config):
            try:
                recommender = await asyncio.to_thread(self._load, new)
            # Anything can break in a bad bundle (missing file, bad JSON, wrong shapes,
            # corrupt safetensors): whatever it is, keep serving the old model.
            except Exception as e:
                self._reject(f"bundle {new.bundle_path!r} rejected: {type(e).__name__}: {e}")
                return
            self.recommender = recommender  # the one reference batches read
            logger.info("serving model %s from %s", recommender.model_version, new.bundle_path)
        self.config = new
        self.last_reload_error = None
        self._apply_threads()
        self._apply_batch_settings()

    def _reject(self, message: str) -> None:
        self.last_reload_error = message
        logger.error("reconfigure: %s; still serving model %s", message, self.model_version)

    @property
    def model_version(self) -> str:
        return self.recommender.model_version

    def check_health(self) -> None:
        """Serve's health probe: unhealthy only if no model is loaded (a rejected swap is not)."""
        if self.recommender is None:
            raise RuntimeError("no model loaded")

    async def recommend(self, request: RecommendRequest) -> RecommendResponse | Rejection:
        """One request; concurrent calls are grouped into batches by `@serve.batch`."""
        answer = await self._batched(request.to_library())
        if isinstance(answer, RequestError):
            return Rejection(field=answer.field, message=str(answer))
        return RecommendResponse.from_library(answer)

    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S
    )
    async def _batched(self, requests: list[RecRequest]) -> list[RecResult | RequestError]:
        return await self.recommend_batch(requests)

    async def recommend_batch(
        self, requests: Sequence[RecRequest]
    ) -> list[RecResult | RequestError]:
        """A batch of library requests -> results, or the RequestError of each bad one."""
        recommender = self.recommender  # read once: a swap cannot split a batch
        errors: dict[int, RequestError] = {}
        for i, request in enumerate(requests):
            try:
                recommender.check(request)
            except RequestError as e:
                errors[i] = e
        good = [r for i, r in enumerate(requests) if i not in errors]
        if not good:
            answers = []
        elif self.config.model_thread:
            answers = await asyncio.to_thread(recommender.recommend, good)
        else:
            # Inline: requests arriving meanwhile wait in the socket and form the next batch.
            answers = recommender.recommend(good)
        results = iter(answers)
        return [errors[i] if i in errors else next(results) for i in range(len(requests))]

    async def model_info(self) -> ModelInfo:
        r = self.recommender
        return ModelInfo(
            model_version=r.model_version,
            num_items=r.num_items,
            num_users=r.num_users,
            created_at=r.metadata.get("created_at"),
            metrics=r.metadata.get("metrics") or {},
            retrievers=sorted(r.retrievers),
            default_retriever=r.default_retriever,
            last_reload_error=self.last_reload_error,
            query_cache=r.query_cache.stats(),
            warnings=list(r.metadata.get("warnings") or []),
        )

    async def health(self) -> Health:
        self.check_health()
        return Health(status="ok", model_version=self.model_version)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this at replica start (one-deployment layout: HTTP in this replica)."""
        return build_api(self)


class NoopService(RecommenderService):
    """Same HTTP, validation, batching and response path; no model (the overhead baseline)."""

    def _load(self, config: ServiceConfig) -> NoopRecommender:
        return NoopRecommender()


class Ingress:
    """HTTP ingress of the composed layout: validates, then calls the model via a handle."""

    def __init__(self, model: DeploymentHandle) -> None:
        self._model = model

    async def recommend(self, request: RecommendRequest) -> RecommendResponse | Rejection:
        return await self._model.recommend.remote(request)

    async def model_info(self) -> ModelInfo:
        return await self._model.model_info.remote()

    async def health(self) -> Health:
        return await self._model.health.remote()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)


# The Serve wrappers. `serve.ingress()` without an app defers building the FastAPI app to
# replica start (`__serve_build_asgi_app__`), so the routes close over the live instance.
RecommenderApp = serve.deployment(name="Recommender")(serve.ingress()(RecommenderService))
NoopApp = serve.deployment(name="Noop")(serve.ingress()(NoopService))
IngressApp = serve.deployment(name="Ingress")(serve.ingress()(Ingress))
RecommenderModel = serve.deployment(name="RecommenderModel")(RecommenderService)
