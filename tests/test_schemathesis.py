"""Property-based fuzzing of every endpoint from the OpenAPI schema: whatever arrives, never a 5xx.

Each operation gets a bounded number of generated requests (derandomized, so a run is repeatable),
once with a camera key and the admin token, and once with no credentials at all.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from inspect_svc.main import create_app
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory, test_bundle):
    app = create_app(make_settings(tmp_path_factory.mktemp("fuzz"), model=test_bundle.root, max_pixels=200_000))
    # The TestClient runs the lifespan (migrations, model, storage); schemathesis then calls the same app.
    with TestClient(app) as client:
        credentials = {**add_camera(client, "fuzz-cam"), **ADMIN}
        # A real row, so listing and per-inspection endpoints have something to find.
        client.post("/inspect", content=png_bytes(), headers={**credentials, "Content-Type": "image/png"})
        yield schemathesis.openapi.from_asgi("/openapi.json", app), credentials


def operations(schema) -> list:  # type: ignore[no-untyped-def]
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize(("authenticated", "examples"), [(True, 20), (False, 5)], ids=["with-keys", "anonymous"])
def test_no_endpoint_answers_5xx(fuzz_target, authenticated, examples):
    schema, credentials = fuzz_target
    headers = credentials if authenticated else {}
    server_errors: list[str] = []

    for operation in operations(schema):

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def probe(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers={**(case.headers or {}), **headers})
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                     f"{response.text[:200]}")

        probe()
    assert server_errors == []
