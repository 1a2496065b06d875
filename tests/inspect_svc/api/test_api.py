"""The HTTP API end to end on a real SQLite file and a real (tiny) ONNX model."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inspect_svc.bundle import write_bundle
from inspect_svc.main import create_app
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes
from tests.utils.onnx_models import make_pixel_model, make_test_bundle, reference_probability


def inspect(client: TestClient, headers: dict[str, str], body: bytes | None = None, **params: str):
    return client.post(
        "/inspect",
        content=body or png_bytes(),
        headers={**headers, "Content-Type": "image/png"},
        params=params,
    )


def test_inspect_returns_verdict_map_and_timings(client, camera_key):
    body = png_bytes(48, 40, seed=1)
    response = inspect(client, camera_key, body, frame_id="f-1", include="map")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["camera_id"] == "cam-1" and result["frame_id"] == "f-1" and result["line"] == "line-a"
    assert result["model_version"] == "test-1"
    assert result["threshold"] == {"pixel": 0.5, "image": 0.5}
    assert set(result["timings"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms"}
    assert (result["width"], result["height"]) == (48, 40)
    # The map is at the input's resolution and matches the model's own arithmetic (8-bit quantised).
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["map_png_base64"]))))
    assert decoded.shape == (40, 48)
    expected = reference_probability(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
    assert np.abs(decoded / 255.0 - expected).max() < 0.02
    assert result["score"] == pytest.approx(expected.max(), abs=1e-3)
    assert result["verdict"] == ("defect" if expected.max() >= 0.5 else "ok")
    # float32 in the graph vs float64 here: pixels right at the threshold may fall either way.
    assert abs(result["defect_area"] - int((expected >= 0.5).sum())) <= 2
    assert sum(region["area"] for region in result["regions"]) <= result["defect_area"]


def test_links_serve_image_map_mask_and_overlay(client, camera_key):
    body = png_bytes(seed=2)
    result = inspect(client, camera_key, body).json()
    image = client.get(result["links"]["image"], headers=camera_key)
    assert image.status_code == 200 and image.content == body and image.headers["content-type"] == "image/png"
    for name in ("map", "mask", "overlay"):
        response = client.get(result["links"][name], headers=camera_key)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(response.content))
        assert picture.size == (48, 40)
    mask = np.asarray(Image.open(io.BytesIO(client.get(result["links"]["mask"], headers=camera_key).content)))
    assert set(np.unique(mask)) <= {0, 255}
    assert int((mask == 255).sum()) == result["defect_area"]


def test_repeated_frame_returns_first_result_without_a_new_row(client, camera_key):
    first = inspect(client, camera_key, png_bytes(seed=3), frame_id="same")
    again = inspect(client, camera_key, png_bytes(seed=4), frame_id="same")
    assert first.status_code == again.status_code == 200
    assert "idempotent-replay" not in first.headers
    assert again.headers["idempotent-replay"] == "true"
    assert again.json()["id"] == first.json()["id"]
    listed = client.get("/inspections", params={"camera_id": "cam-1"}, headers=camera_key).json()
    assert [item["frame_id"] for item in listed["items"]] == ["same"]


def test_multipart_upload_with_form_fields(client, camera_key):
    response = client.post(
        "/inspect",
        files={"file": ("part.png", png_bytes(seed=5), "image/png")},
        data={"frame_id": "mp-1", "line": "line-a"},
        headers=camera_key,
    )
    assert response.status_code == 200, response.text
    assert response.json()["frame_id"] == "mp-1" and response.json()["line"] == "line-a"


def test_api_key_is_required_and_bound_to_its_camera(client, camera_key):
    assert inspect(client, {}).status_code == 401
    assert inspect(client, {"X-API-Key": "isk_wrong"}).status_code == 401
    assert inspect(client, camera_key, camera_id="cam-2").status_code == 403
    assert client.get("/inspections").status_code == 401


def test_keys_optional_when_auth_is_off(tmp_path, test_bundle):
    settings = make_settings(tmp_path, model=test_bundle.root, require_api_key=False)
    with TestClient(create_app(settings)) as client:
        assert inspect(client, {}).status_code == 422  # no key and no camera_id
        response = inspect(client, {}, camera_id="bench")
        assert response.status_code == 200 and response.json()["camera_id"] == "bench"


def test_listing_filters_and_keyset_pages(client, camera_key):
    other = add_camera(client, "cam-2", "line-b")
    for index in range(5):
        assert inspect(client, camera_key, png_bytes(seed=index), frame_id=f"a{index}").status_code == 200
    for index in range(2):
        assert inspect(client, other, png_bytes(seed=10 + index), frame_id=f"b{index}").status_code == 200
    seen: list[str] = []
    cursor = None
    while True:
        params = {"line": "line-a", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/inspections", params=params, headers=ADMIN).json()
        seen += [item["frame_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"]
    assert client.get("/inspections", params={"cursor": "garbage"}, headers=ADMIN).status_code == 400
    by_camera = client.get("/inspections", params={"camera_id": "cam-2"}, headers=ADMIN).json()
    assert {item["frame_id"] for item in by_camera["items"]} == {"b0", "b1"}
    unreviewed = client.get("/inspections", params={"reviewed": "false"}, headers=ADMIN).json()
    assert len(unreviewed["items"]) == 7


@pytest.mark.parametrize(
    "params",
    [
        {"since": "0001-01-01T00:00+01:00"},
        {"until": "0001-01-01T00:00+01:00"},
        {"until": "9999-12-31T23:59:59-01:00"},
        {"since": "0001-01-01T00:00+01:00", "until": "9999-12-31T23:59:59-01:00"},
    ],
    ids=["since-before-year-1", "until-before-year-1", "until-after-year-9999", "both"],
)
def test_times_outside_utc_are_422_with_a_message(client, params):
    response = client.get("/inspections", params=params, headers=ADMIN)
    assert response.status_code == 422, response.text
    body = response.json()
    assert "outside the dates UTC can express" in body["detail"]
    assert {issue["loc"][-1] for issue in body["errors"]} == set(params)


def test_times_inside_utc_with_offsets_filter(client, camera_key):
    created = inspect(client, camera_key, png_bytes(seed=11)).json()["created_at"]
    early = client.get("/inspections", params={"until": "0001-01-01T02:00+01:00"}, headers=ADMIN).json()
    late = client.get("/inspections", params={"since": "0001-01-01T02:00+01:00"}, headers=ADMIN).json()
    assert early["items"] == [] and [item["created_at"] for item in late["items"]] == [created]


def test_unknown_inspection_is_404(client, camera_key):
    assert client.get("/inspections/nope", headers=camera_key).status_code == 404
    assert client.get("/inspections/nope/overlay.png", headers=camera_key).status_code == 404


def test_line_threshold_override_is_used_and_recorded(client, camera_key):
    response = client.put("/lines/line-a/threshold", json={"pixel": 0.99, "image": 0.99}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["effective"] == {"pixel": 0.99, "image": 0.99}
    result = inspect(client, camera_key, png_bytes(seed=7)).json()
    assert result["threshold"] == {"pixel": 0.99, "image": 0.99}
    assert result["verdict"] == ("defect" if result["score"] >= 0.99 else "ok")
    cleared = client.put("/lines/line-a/threshold", json={"pixel": None, "image": None}, headers=ADMIN)
    assert cleared.json()["effective"] == {"pixel": 0.5, "image": 0.5}


def test_admin_endpoints_need_the_admin_token(client):
    assert client.put("/lines/x/threshold", json={"pixel": 0.5}).status_code == 401
    assert (
        client.post("/cameras", json={"name": "c"}, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert client.post("/models/test-1/activate").status_code == 401


def test_hot_swap_and_rollback(client, camera_key, second_bundle):
    registered = client.post("/models", json={"path": str(second_bundle.root)}, headers=ADMIN)
    assert registered.status_code == 201 and registered.json()["active"] is False
    activated = client.post("/models/test-2/activate", headers=ADMIN)
    assert activated.status_code == 200 and activated.json()["active"] is True
    assert inspect(client, camera_key).json()["model_version"] == "test-2"
    rolled_back = client.post("/models/rollback", headers=ADMIN)
    assert rolled_back.status_code == 200 and rolled_back.json()["version"] == "test-1"
    assert inspect(client, camera_key, png_bytes(seed=9)).json()["model_version"] == "test-1"
    models = {item["version"]: item["active"] for item in client.get("/models", headers=ADMIN).json()}
    assert models == {"test-1": True, "test-2": False}
    assert client.post("/models/missing/activate", headers=ADMIN).status_code == 404
    assert client.post("/models", json={"path": "/no/such/bundle"}, headers=ADMIN).status_code == 422
    assert client.post("/models", json={"path": "bad\u0000path"}, headers=ADMIN).status_code == 422


def test_health_and_metrics(client, camera_key):
    assert client.get("/livez").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["model_version"] == "test-1"
    inspect(client, camera_key)
    inspect(client, camera_key, b"not an image")
    text = client.get("/metrics").text
    assert 'inspect_http_requests_total{method="POST",route="/inspect",status="200"} 1.0' in text
    assert "inspect_rejections_total" in text and "inspect_batch_size_count" in text
    assert "inspect_total_seconds_count 1.0" in text


def test_readyz_fails_without_a_model(tmp_path):
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/readyz").status_code == 503
        key = add_camera(client)
        response = inspect(client, key)
        assert response.status_code == 503 and "retry-after" in response.headers


def test_activating_a_graph_that_disagrees_with_its_manifest_is_422(client, camera_key, tmp_path):
    # Checksums are valid (write_bundle fills them in), but the graph names its output "scores".
    bundle = make_test_bundle(tmp_path / "mismatch", version="mismatch-1")
    graph = make_pixel_model(tmp_path / "scores.onnx", tile=32, output_name="scores")
    write_bundle(bundle.root, graph, bundle.manifest)
    assert client.post("/models", json={"path": str(bundle.root)}, headers=ADMIN).status_code == 201
    response = client.post("/models/mismatch-1/activate", headers=ADMIN)
    assert response.status_code == 422 and "outputs" in response.json()["detail"]
    assert inspect(client, camera_key).json()["model_version"] == "test-1"


def test_concurrent_activations_leave_the_database_marking_the_serving_model(
    client, second_bundle, monkeypatch
):
    models = client.app.state.service.models
    assert client.post("/models", json={"path": str(second_bundle.root)}, headers=ADMIN).status_code == 201
    record = models._record
    recording_second = threading.Event()

    def slow_record(bundle, activate):
        if bundle.manifest.model_version == "test-2":
            recording_second.set()
            time.sleep(0.3)  # without the lock, test-1's whole activation fits in here
        return record(bundle, activate)

    monkeypatch.setattr(models, "_record", slow_record)

    async def both() -> None:
        first = asyncio.create_task(models.activate("test-2"))
        while not (recording_second.is_set() or first.done()):
            await asyncio.sleep(0.01)
        await asyncio.gather(first, models.activate("test-1"))

    client.portal.call(both)
    listed = client.get("/models", headers=ADMIN).json()
    assert [m["version"] for m in listed if m["active"]] == [models.active_version] == ["test-1"]


def test_replay_with_map_after_the_map_was_pruned_answers_without_it(client, camera_key):
    first = inspect(client, camera_key, png_bytes(seed=8), frame_id="pruned").json()
    client.app.state.service.blobs.path(map_key_of(client, first["id"])).unlink()
    again = inspect(client, camera_key, png_bytes(seed=8), frame_id="pruned", include="map")
    assert again.status_code == 200 and again.headers["idempotent-replay"] == "true"
    assert again.json()["id"] == first["id"] and again.json().get("map_png_base64") is None


def map_key_of(client, inspection_id: str) -> str:
    """The blob key of an inspection's map, read through the service's own repository."""
    from inspect_svc.storage import repositories
    from inspect_svc.storage.db import session_scope

    with session_scope(client.app.state.service.sessions) as session:
        return repositories.get_inspection_record(session, inspection_id=inspection_id).map_key


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("options", "/cameras", "GET, HEAD, POST"),
        ("delete", "/cameras", "GET, HEAD, POST"),
        ("options", "/lines/line-a/threshold", "GET, HEAD, PUT"),
        ("patch", "/inspect", "POST"),
    ],
)
def test_405_lists_every_method_of_the_path(client, method, path, allowed):
    response = client.request(method, path, headers=ADMIN)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_validation_errors_have_the_declared_error_shape(client):
    response = client.put("/lines/line-a/threshold", json={"pixel": True, "image": "0.5"}, headers=ADMIN)
    assert response.status_code == 422
    body = response.json()
    assert (
        isinstance(body["detail"], str) and "body.pixel" in body["detail"] and "body.image" in body["detail"]
    )
    assert [issue["loc"] for issue in body["errors"]] == [["body", "pixel"], ["body", "image"]]
    assert all("input" not in issue for issue in body["errors"])  # a rejected value is never echoed
    declared = client.get("/openapi.json").json()["paths"]["/lines/{line}/threshold"]["put"]["responses"]
    assert declared["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_inspect_declares_every_status_it_answers(client):
    # Each is answered by a test: 408 in test_body_deadline, 413/415/422 in test_bad_inputs, 503 in test_faults.
    declared = client.get("/openapi.json").json()["paths"]["/inspect"]["post"]["responses"]
    assert set(declared) == {"200", "400", "401", "403", "408", "413", "415", "422", "503"}
    for code, entry in declared.items():
        if code != "200":
            assert entry["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    assert "INSPECT_BODY_TIMEOUT_S" in declared["408"]["description"]
