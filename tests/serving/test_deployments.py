"""The deployment classes and the HTTP API without Ray: validation, batching path, hot swap."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from fastapi.testclient import TestClient

from recsys.recommend import QueryCache, RecRequest, RecResult, RequestError
from serving.api import build_api
from serving.deployments import NoopService, RecommenderService, ServiceConfig
from serving.schemas import MAX_HISTORY, RecommendRequest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class FakeRecommender:
    """Answers with the version's name as the only item; can block to model a slow batch."""

    default_retriever = "rails"
    num_items = 3
    num_users = 1

    def __init__(self, version: str, gate: threading.Event | None = None) -> None:
        self.model_version = version
        self.metadata = {
            "model_version": version,
            "created_at": "2026-01-01T00:00:00+00:00",
            "metrics": {"test": {"hr@10": 0.5}},
            "warnings": ["the model does not beat popularity on validation hr@10: 0.1 vs 0.2"],
        }
        self.retrievers = {"exact": None, "rails": None}
        self.gate = gate
        self.batches: list[int] = []
        self.query_cache = QueryCache(0)

    def check(self, request: RecRequest) -> None:
        if request.user_key == "needs-exact-only":
            raise RequestError("retriever", "not available")

    def recommend(self, requests: Sequence[RecRequest]) -> list[RecResult]:
        if self.gate is not None:
            assert self.gate.wait(10)
        self.batches.append(len(requests))
        return [
            RecResult(
                (self.model_version,),
                (1.0,),
                (None,),
                r.retriever or "rails",
                None,
                (),
                (),
                self.model_version,
            )
            for r in requests
        ]


class Service(RecommenderService):
    """Loads FakeRecommenders by path ("broken*" fails) and answers without @serve.batch."""

    bundles: ClassVar[dict[str, FakeRecommender]] = {}

    def _load(self, config: ServiceConfig) -> FakeRecommender:
        if config.bundle_path.startswith("broken"):
            raise FileNotFoundError(f"{config.bundle_path}/metadata.json")
        return self.bundles.setdefault(config.bundle_path, FakeRecommender(config.bundle_path))

    async def _batched(self, request: RecRequest):  # type: ignore[override]
        # @serve.batch needs a replica context; the batch logic itself is recommend_batch.
        return (await self.recommend_batch([request]))[0]


@pytest.fixture
def service() -> Service:
    Service.bundles = {}
    return Service(ServiceConfig(bundle_path="v1"))


def test_batch_answers_and_per_request_errors(service: Service):
    reqs = [RecRequest(user_key="a"), RecRequest(user_key="needs-exact-only"), RecRequest()]
    out = asyncio.run(service.recommend_batch(reqs))
    assert isinstance(out[1], RequestError)
    assert out[0].item_keys == ("v1",) and out[2].item_keys == ("v1",)
    assert service.recommender.batches == [2]  # one model call for the good ones


def test_hot_swap_and_broken_bundle(service: Service, caplog: pytest.LogCaptureFixture):
    asyncio.run(service.reconfigure({"bundle_path": "v2"}))
    assert service.model_version == "v2" and service.last_reload_error is None
    logger = logging.getLogger("ray.serve")
    logger.addHandler(caplog.handler)  # Serve's logger may not propagate to the root
    try:
        asyncio.run(service.reconfigure({"bundle_path": "broken-v3"}))
    finally:
        logger.removeHandler(caplog.handler)
    assert service.model_version == "v2"
    assert "broken-v3" in (service.last_reload_error or "")
    assert any("broken-v3" in r.getMessage() for r in caplog.records)
    service.check_health()  # still healthy
    assert asyncio.run(service.health()).model_version == "v2"
    assert asyncio.run(service.model_info()).last_reload_error is not None
    asyncio.run(service.reconfigure({"bundle_path": "v2", "max_batch_size": 8}))
    assert service.config.max_batch_size == 8 and service.last_reload_error is None


def test_invalid_user_config_is_rejected(service: Service):
    asyncio.run(service.reconfigure({"bundle_path": "v1", "colour": "red"}))
    assert "colour" in (service.last_reload_error or "")
    asyncio.run(service.reconfigure({"default_retriever": "faiss"}))
    assert "default_retriever" in (service.last_reload_error or "")
    assert service.model_version == "v1"


def test_in_flight_batch_finishes_on_old_model(service: Service):
    # Only a batch run in a worker thread can be in flight while reconfigure runs (an inline
    # batch holds the event loop until it is done).
    gate = threading.Event()
    Service.bundles["slow"] = FakeRecommender("slow", gate)

    async def scenario():
        await service.reconfigure({"bundle_path": "slow", "model_thread": True})
        in_flight = asyncio.create_task(service.recommend_batch([RecRequest(user_key="a")]))
        await asyncio.sleep(0.05)  # the batch is now inside the (blocked) model call
        await service.reconfigure({"bundle_path": "v2"})
        after = await service.recommend_batch([RecRequest(user_key="b")])
        gate.set()
        return (await in_flight)[0], after[0]

    old, new = asyncio.run(scenario())
    assert old.model_version == "slow" and new.model_version == "v2"


def test_config_validation():
    with pytest.raises(ValueError, match="default_retriever"):
        ServiceConfig(bundle_path="b", default_retriever="faiss")
    with pytest.raises(ValueError, match="max_batch_size"):
        ServiceConfig(bundle_path="b", max_batch_size=0)
    with pytest.raises(ValueError, match="bundle_path"):
        ServiceConfig(bundle_path="")
    with pytest.raises(ValueError, match="model_thread"):
        ServiceConfig(bundle_path="b", model_thread="yes")  # type: ignore[arg-type]


def test_inline_and_threaded_batches_answer_alike(service: Service):
    reqs = [RecRequest(user_key="a"), RecRequest(user_key="needs-exact-only"), RecRequest()]
    inline = asyncio.run(service.recommend_batch(reqs))
    asyncio.run(service.reconfigure({"model_thread": True}))
    assert service.config.model_thread and service.last_reload_error is None
    threaded = asyncio.run(service.recommend_batch(reqs))
    assert [type(x) for x in inline] == [type(x) for x in threaded]
    assert inline[0] == threaded[0] and inline[2] == threaded[2]


@pytest.fixture
def client(service: Service) -> TestClient:
    return TestClient(build_api(service))


BAD_BODIES = {
    b"{bad json": "body",
    b"\xff\xfe": "body",  # not UTF-8: FastAPI's bare 400 becomes the usual 422
    b"[1, 2]": "body",
    b"": "body",
    b'{"k": 0}': "k",
    b'{"k": 1001}': "k",
    b'{"k": "10"}': "k",
    b'{"k": 2.5}': "k",
    b'{"exclude_seen": "yes"}': "exclude_seen",
    b'{"user_id": 7}': "user_id",
    b'{"history": [1, 2]}': "history",
    b'{"history": "i1"}': "history",
    b'{"retriever": "faiss"}': "retriever",
    b'{"colour": "red"}': "colour",
    b'{"include_only": [""]}': "include_only",
}


@pytest.mark.parametrize("body", list(BAD_BODIES))
def test_bad_input_is_4xx_naming_the_field(client: TestClient, body: bytes):
    r = client.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert BAD_BODIES[body] in r.json()["message"]


def test_oversized_history_and_unservable_request(client: TestClient):
    r = client.post("/v1/recommend", json={"history": ["i1"] * (MAX_HISTORY + 1)})
    assert r.status_code == 422 and "history" in r.json()["message"]
    r = client.post("/v1/recommend", json={"user_id": "needs-exact-only"})
    assert r.status_code == 400 and r.json()["field"] == "retriever"


def test_good_requests(client: TestClient):
    r = client.post("/v1/recommend", json={"user_id": "a", "k": 3, "retriever": "exact"})
    assert r.status_code == 200
    body = r.json()
    assert body["items"] == [{"item_id": "v1", "score": 1.0, "title": None}]
    assert body["model_version"] == "v1" and body["retriever"] == "exact"
    assert body["fallback"] is None and body["unknown_items"] == []
    assert client.get("/healthz").json() == {"status": "ok", "model_version": "v1"}
    info = client.get("/v1/model").json()
    assert info["num_items"] == 3 and info["metrics"] == {"test": {"hr@10": 0.5}}
    assert len(info["warnings"]) == 1 and "popularity" in info["warnings"][0]
    assert "/v1/recommend" in client.get("/openapi.json").json()["paths"]


def test_request_schema_maps_to_library():
    req = RecommendRequest(user_id="u", history=["a"], exclude=["b"], include_only=["c"])
    lib = req.to_library()
    assert lib == RecRequest(user_key="u", history=("a",), exclude=("b",), include_only=("c",))


def test_noop_service_answers_k_items():
    svc = NoopService(ServiceConfig(bundle_path="ignored"))
    (out,) = asyncio.run(svc.recommend_batch([RecRequest(k=7)]))
    assert len(out.item_keys) == 7


def test_app_builder_and_serve_yaml():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from serving.app import AppArgs, build_app

    raw = yaml.safe_load((CONFIGS / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    assert app.import_path == "serving.app:build_app"
    args = AppArgs.model_validate(app.args)
    for layout in ("single", "composed"):
        built = build_app(args.model_copy(update={"layout": layout, "num_gpus": 0}))
        assert isinstance(built, Application)
    assert isinstance(build_app(args.model_copy(update={"noop": True})), Application)
    with pytest.raises(ValueError, match="layout"):
        AppArgs.model_validate({"bundle_path": "b", "layout": "triple"})
