"""A damaged frame is never scored `ok`: refused with 422 (the default) or, with
INSPECT_DAMAGED_FRAMES=flag, recorded unscored as `invalid_image` — through `/inspect`, the API, the
dashboard, the statistics and the export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from inspect_svc.dashboard.stats import defect_rate_per_hour
from inspect_svc.main import create_app
from inspect_svc.review_export import write_reviewed_dataset
from inspect_svc.schemas import ReviewCreate
from inspect_svc.storage import repositories
from inspect_svc.storage.db import session_scope
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes
from tests.inspect_svc.api.test_bad_inputs import HALF_DEMO_JPEG, INTACT_DEMO_JPEG
from tests.utils.reviews import add_user, log_in

JPEG = {"Content-Type": "image/jpeg"}
PNG_TYPE = {"Content-Type": "image/png"}
TRUNCATED_PNG = png_bytes(64, 48, seed=3)[:300]


def client_for(tmp_path, bundle, mode: str | None) -> TestClient:
    overrides = {} if mode is None else {"damaged_frames": mode}
    settings = make_settings(tmp_path, model=bundle.root, dashboard_secure_cookies=False, **overrides)
    return TestClient(create_app(settings), base_url="http://testserver")


@pytest.fixture(scope="module")
def flagging(tmp_path_factory, test_bundle) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with client_for(tmp_path_factory.mktemp("flag"), test_bundle, "flag") as client:
        yield client, add_camera(client)


@pytest.mark.parametrize("mode", [None, "refuse"])
def test_refuse_mode_answers_422_and_stores_nothing(tmp_path, test_bundle, mode):
    with client_for(tmp_path, test_bundle, mode) as client:
        key = add_camera(client)
        refused = client.post("/inspect?frame_id=half", content=HALF_DEMO_JPEG, headers={**key, **JPEG})
        truncated = client.post("/inspect?frame_id=cut", content=TRUNCATED_PNG, headers={**key, **PNG_TYPE})
        listed = client.get("/inspections", headers=ADMIN).json()["items"]
    assert (refused.status_code, refused.json()["reason"]) == (422, "corrupt")
    assert (truncated.status_code, truncated.json()["reason"]) == (422, "truncated")
    assert listed == []


def test_flag_mode_records_a_damaged_frame_as_invalid_image_never_scored(flagging):
    client, key = flagging
    answer = client.post(
        "/inspect?frame_id=half&include=map", content=HALF_DEMO_JPEG, headers={**key, **JPEG}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "invalid_image"
    assert (body["score"], body["defect_area"], body["regions"]) == (0.0, 0, [])
    assert "map_png_base64" not in body
    assert client.get(f"/inspections/{body['id']}", headers=key).json()["verdict"] == "invalid_image"
    # The body is kept exactly as received, for whoever looks into the camera's glitch.
    image = client.get(f"/inspections/{body['id']}/image", headers=key)
    assert image.content == HALF_DEMO_JPEG and image.headers["content-type"] == "image/jpeg"
    for picture in ("map.png", "mask.png", "overlay.png"):
        missing = client.get(f"/inspections/{body['id']}/{picture}", headers=key)
        assert missing.status_code == 404 and "invalid_image" in missing.json()["detail"]
    assert 'inspect_verdicts_total{verdict="invalid_image"}' in client.get("/metrics").text


def test_a_flagged_frame_is_idempotent_like_any_frame(flagging):
    client, key = flagging
    first = client.post("/inspect?frame_id=again", content=HALF_DEMO_JPEG, headers={**key, **JPEG})
    second = client.post("/inspect?frame_id=again", content=HALF_DEMO_JPEG, headers={**key, **JPEG})
    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.headers.get("Idempotent-Replay") == "true"
    listed = client.get("/inspections?verdict=invalid_image", headers=key).json()["items"]
    assert [item["id"] for item in listed].count(first.json()["id"]) == 1


def test_flag_mode_flags_only_damage_not_bodies_that_are_no_frame(flagging):
    client, key = flagging
    truncated = client.post("/inspect?frame_id=cut", content=TRUNCATED_PNG, headers={**key, **PNG_TYPE})
    assert truncated.status_code == 200 and truncated.json()["verdict"] == "invalid_image"
    assert (truncated.json()["width"], truncated.json()["height"]) == (0, 0)  # the header never arrived
    text = client.post("/inspect", content=b"hello, world", headers={**key, **PNG_TYPE})
    tiny = client.post("/inspect", content=png_bytes(4, 4), headers={**key, **PNG_TYPE})
    assert (text.status_code, tiny.status_code) == (415, 422)
    intact = client.post("/inspect", content=INTACT_DEMO_JPEG, headers={**key, **JPEG})
    assert intact.json()["verdict"] in ("ok", "defect")


def test_flagged_frames_are_shown_as_such_and_kept_out_of_rates_and_exports(flagging):
    client, key = flagging
    client.post("/inspect?frame_id=scored", content=INTACT_DEMO_JPEG, headers={**key, **JPEG})
    flagged = client.post("/inspect?frame_id=shown", content=HALF_DEMO_JPEG, headers={**key, **JPEG}).json()
    service = client.app.state.service
    reviewer_id = add_user(SimpleNamespace(sessions=service.sessions), "rita", "reviewer")
    log_in(client, "rita")
    queue = client.get("/dashboard/queue?verdict=invalid_image&review_state=any")
    assert queue.status_code == 200 and "shown" in queue.text and 'class="badge invalid_image"' in queue.text
    page = client.get(f"/dashboard/inspections/{flagged['id']}")
    assert (
        page.status_code == 200 and 'id="invalid-image"' in page.text and 'id="review-form"' not in page.text
    )
    assert client.get(f"/dashboard/inspections/{flagged['id']}/map.png").status_code == 404

    items = client.get("/inspections?limit=500", headers=ADMIN).json()["items"]
    scored = [item for item in items if item["verdict"] != "invalid_image"]
    assert len(scored) < len(items)
    now = datetime.now(timezone.utc)
    with session_scope(service.sessions) as session:
        rates = defect_rate_per_hour(session, start=now - timedelta(hours=2), end=now + timedelta(hours=1))
        repositories.add_review(
            session,
            review=ReviewCreate(inspection_id=flagged["id"], reviewer_id=reviewer_id, verdict="reject"),
        )
    by_hour: dict[datetime, list[bool]] = {}
    for item in scored:
        hour = datetime.fromisoformat(item["created_at"]).replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, []).append(item["verdict"] == "defect")
    assert dict(rates["line-a"]) == pytest.approx({hour: sum(d) / len(d) for hour, d in by_hour.items()})

    written: dict[str, bytes] = {}
    with session_scope(service.sessions) as session:
        manifest = write_reviewed_dataset(session, service.blobs, SimpleNamespace(write=written.__setitem__))
    assert [item.inspection_id for item in manifest.skipped] == [flagged["id"]]
    assert "invalid_image" in manifest.skipped[0].reason and not manifest.items
