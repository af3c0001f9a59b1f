"""Schema-based fuzzing of the HTTP API, in-process (no network, no Ray).

Schemathesis generates requests from the OpenAPI document (valid and invalid bodies) with a
fixed seed and budget; the app must never answer 5xx and every response must match the
schema it declares. Here the schema and the validation must agree, e.g. on `"k": 745.0`,
which JSON Schema counts as an integer.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from serving.api import build_api
from serving.deployments import ServiceConfig
from tests.serving.test_deployments import Service

Service.bundles = {}
APP = build_api(Service(ServiceConfig(bundle_path="v1")))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


@SCHEMA.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(case) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


def test_an_integral_float_k_is_the_integer() -> None:
    from fastapi.testclient import TestClient

    client = TestClient(APP)
    r = client.post("/v1/recommend", json={"user_id": "a", "k": 745.0, "retriever": "exact"})
    assert r.status_code == 200, r.text
    assert client.post("/v1/recommend", json={"k": 2.5}).status_code == 422
