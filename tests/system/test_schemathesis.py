"""The API answers as its OpenAPI schema says, under property-based fuzzing with every conformance check.

Schemathesis runs its examples, coverage and fuzzing phases over every operation (a bounded number of
cases each, from a fixed seed; the values it learns from responses, such as new inspection ids, still
vary from run to run) and applies all its checks: no 5xx, every status code,
content type, header and body declared in the schema, invalid input refused, valid input accepted,
`Allow` agreeing with the schema on 405 and OPTIONS, and requests without the credentials a route
declares (camera key, admin token) refused. It runs three times: with the admin token and a
camera key, with the camera key alone (its scope refuses most reads), and with no credentials.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from inspect_svc.main import create_app
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes

# What the schema cannot say, and so what a schema-valid request may still be refused for (400 / 422):
# whether the bytes are a non-empty image of the accepted size and type, whether a bundle path exists
# on the server, whether an opaque paging cursor is one this service issued.
SEMANTIC_REFUSALS = """
[[operations]]
include-name = "POST /inspect"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "413", "415", "422", "503"]

[[operations]]
include-name = "POST /models"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]

[[operations]]
include-name = "GET /inspections"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403"]
"""


def fuzz_config(examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_str(
        f"""
seed = 0

[generation]
max-examples = {examples}
deterministic = true

[phases.stateful]
enabled = false
{SEMANTIC_REFUSALS}
"""
    )


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory, test_bundle):
    app = create_app(
        make_settings(tmp_path_factory.mktemp("fuzz"), model=test_bundle.root, max_pixels=200_000)
    )
    # The TestClient runs the lifespan (migrations, model, storage); schemathesis then calls the same app.
    with TestClient(app) as client:
        camera = add_camera(client, "fuzz-cam")
        # A real row, so listing and per-inspection endpoints have something to find.
        client.post("/inspect", content=png_bytes(), headers={**camera, "Content-Type": "image/png"})
        yield app, camera


def conformance_failures(app, headers: dict[str, str], examples: int) -> list[str]:
    """Every failed check of a whole schemathesis run, one line each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config(examples))
    schema.config.update(headers=headers)
    failures: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"error: {event}")
        if not isinstance(event, events.ScenarioFinished) or event.status != Status.FAILURE:
            continue
        for case_id, checks in event.recorder.checks.items():
            case = event.recorder.cases[case_id].value
            interaction = event.recorder.interactions.get(case_id)
            status = interaction.response.status_code if interaction and interaction.response else None
            failures += [
                f"{event.phase.value} {case.method} {case.formatted_path} -> {status}: {check.name}: "
                f"{_summary(check.failure_info.failure) if check.failure_info else ''}"
                for check in checks
                if check.status == Status.FAILURE
            ]
    return sorted(set(failures))


@pytest.mark.parametrize(
    ("credentials", "examples"),
    [("admin-and-camera", 15), ("camera-only", 5), ("anonymous", 5)],
)
def test_api_conforms_to_its_schema(fuzz_target, credentials, examples):
    app, camera = fuzz_target
    headers = {"admin-and-camera": {**camera, **ADMIN}, "camera-only": camera, "anonymous": {}}[credentials]
    failures = conformance_failures(app, headers, examples)
    assert not failures, "\n".join(failures)


def _summary(failure: object) -> str:
    """The failure's title and the line that says what was wrong, e.g. which component was invalid."""
    lines = [line for line in str(failure).splitlines() if line.strip()]
    return " | ".join(lines[:4])
