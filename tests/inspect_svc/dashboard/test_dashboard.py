"""Dashboard over HTTP: login, CSRF, roles, the queue (filters, keyset paging) and review actions."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from inspect_svc.dashboard.auth import SESSION_COOKIE
from inspect_svc.rendering import thumbnail_jpeg
from inspect_svc.schemas import CameraCreate
from inspect_svc.security import hash_api_key, new_api_key
from inspect_svc.storage import repositories
from inspect_svc.storage import review_queue as queries
from inspect_svc.storage.db import session_scope
from inspect_svc.storage.models import ReviewDB
from inspect_svc.storage.review_queue import Cursor, QueueFilters
from tests.utils.reviews import (
    BASE_TIME,
    CSRF_FIELD,
    PASSWORD,
    add_inspection,
    add_user,
    dashboard_app,
    log_in,
    make_world,
    mask_png,
)


@pytest.fixture
def world(tmp_path):
    world = make_world(tmp_path)
    for username, role in (("vera", "viewer"), ("rita", "reviewer"), ("ada", "admin")):
        add_user(world, username, role)
    return world


@pytest.fixture
def client(world):
    with TestClient(dashboard_app(world), base_url="http://testserver") as test_client:
        yield test_client


def reviews_of(world, inspection_id: str) -> list[ReviewDB]:
    with session_scope(world.sessions) as session:
        return list(session.scalars(select(ReviewDB).where(ReviewDB.inspection_id == inspection_id)))


# --- access control --------------------------------------------------------------------------------


def test_logged_out_user_is_sent_to_login_and_sees_nothing(world, client):
    item = add_inspection(world, score=0.9)
    for path in (
        "/dashboard/queue",
        f"/dashboard/inspections/{item.id}",
        f"/dashboard/inspections/{item.id}/image",
    ):
        reply = client.get(path, follow_redirects=False)
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/dashboard/login?next=")
        assert item.id not in reply.text
    posted = client.post(f"/dashboard/inspections/{item.id}/review", data={"verdict": "confirm"})
    assert posted.status_code == 401
    assert reviews_of(world, item.id) == []


def test_login_sets_a_hardened_session_cookie(client):
    log_in(client, "rita")
    cookie = next(c for c in client.cookies.jar if c.name == SESSION_COOKIE)
    assert cookie.path == "/dashboard"
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite").lower() == "lax"


def test_wrong_password_and_missing_login_token_are_refused(client):
    form = client.get("/dashboard/login")
    token = CSRF_FIELD.search(form.text).group(1)
    wrong = client.post(
        "/dashboard/login", data={"username": "rita", "password": "nope", "csrf_token": token}
    )
    assert wrong.status_code == 401
    assert "wrong password" in wrong.text
    no_token = client.post("/dashboard/login", data={"username": "rita", "password": PASSWORD})
    assert no_token.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_login_never_redirects_off_site(client):
    form = client.get("/dashboard/login")
    token = CSRF_FIELD.search(form.text).group(1)
    reply = client.post(
        "/dashboard/login",
        data={
            "username": "rita",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "https://evil.example/x",
        },
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/dashboard/queue"


def test_camera_api_key_does_not_open_the_dashboard(world, client):
    api_key = new_api_key()
    with session_scope(world.sessions) as session:
        repositories.create_camera(
            session, camera=CameraCreate(name="cam-1", line="line-a"), api_key_hash=hash_api_key(api_key)
        )
    item = add_inspection(world, score=0.9)
    headers = {"X-API-Key": api_key}
    page = client.get("/dashboard/queue", headers=headers, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    posted = client.post(
        f"/dashboard/inspections/{item.id}/review", headers=headers, data={"verdict": "reject"}
    )
    assert posted.status_code == 401
    assert reviews_of(world, item.id) == []


def test_viewer_can_look_but_cannot_review(world, client):
    item = add_inspection(world, score=0.9)
    csrf = log_in(client, "vera")
    page = client.get(f"/dashboard/inspections/{item.id}")
    assert page.status_code == 200
    assert 'id="review-form"' not in page.text
    posted = client.post(
        f"/dashboard/inspections/{item.id}/review", data={"verdict": "confirm", "csrf_token": csrf}
    )
    assert posted.status_code == 403
    assert reviews_of(world, item.id) == []


def test_reviewer_cannot_reach_admin_only_pages(client):
    log_in(client, "rita")
    assert client.get("/dashboard/admin", follow_redirects=False).status_code == 403


def test_post_without_the_session_csrf_token_is_refused(world, client):
    item = add_inspection(world, score=0.9)
    csrf = log_in(client, "rita")
    url = f"/dashboard/inspections/{item.id}/review"
    assert client.post(url, data={"verdict": "confirm"}).status_code == 403
    assert client.post(url, data={"verdict": "confirm", "csrf_token": "forged"}).status_code == 403
    assert (
        client.post(url, data={"verdict": "confirm"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    )
    assert reviews_of(world, item.id) == []
    accepted = client.post(url, data={"verdict": "confirm", "csrf_token": csrf}, follow_redirects=False)
    assert accepted.status_code == 303


def test_logout_revokes_the_session_server_side(client):
    csrf = log_in(client, "rita")
    stolen = client.cookies.get(SESSION_COOKIE)
    assert (
        client.post("/dashboard/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    )
    client.cookies.set(SESSION_COOKIE, stolen, path="/dashboard")
    assert client.get("/dashboard/queue", follow_redirects=False).status_code == 303


# --- the queue -----------------------------------------------------------------------------------------


def test_queue_lists_highest_score_first_and_pages_by_keyset(world, client):
    scores = [0.91, 0.42, 0.77, 0.77, 0.13, 0.66, 0.99]
    items = [add_inspection(world, score=score, minutes=index) for index, score in enumerate(scores)]
    log_in(client, "vera")
    expected = [item.id for item in sorted(items, key=lambda item: (item.score, item.id), reverse=True)]
    seen: list[str] = []
    url = "/dashboard/queue?limit=3"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        seen += re.findall(r'data-href="/dashboard/inspections/([0-9a-f-]+)\?', page.text)
        following = re.search(r'rel="next" href="([^"]+)"', page.text)
        url = following.group(1).replace("&amp;", "&") if following else ""
    assert seen == expected


@pytest.mark.parametrize("sort", ["score", "time"])
def test_keyset_pages_cover_every_row_once(world, sort):
    for index in range(11):
        add_inspection(world, score=round(0.1 * (index % 4), 2), minutes=index % 5)
    filters = QueueFilters(review_state="any", sort=sort)
    with session_scope(world.sessions) as session:
        everything = queries.queue_page(session, filters, limit=100).items
        cursor, paged = None, []
        while True:
            page = queries.queue_page(session, filters, cursor=cursor, limit=4)
            paged += page.items
            if page.next_cursor is None:
                break
            cursor = Cursor.decode(page.next_cursor)
    key = (
        (lambda item: (item.score, item.id)) if sort == "score" else (lambda item: (item.created_at, item.id))
    )
    assert [item.id for item in paged] == [item.id for item in sorted(everything, key=key, reverse=True)]
    assert len({item.id for item in paged}) == 11


def test_queue_filters_narrow_the_list(world, client):
    wanted = add_inspection(world, score=0.8, camera="cam-2", line="line-b", model_version="m2", minutes=30)
    add_inspection(world, score=0.8, camera="cam-1", line="line-a", model_version="m1", minutes=30)
    add_inspection(world, score=0.2, camera="cam-2", line="line-b", model_version="m2", minutes=30)
    add_inspection(world, score=0.8, camera="cam-2", line="line-b", model_version="m2", minutes=300)
    log_in(client, "vera")
    since = (BASE_TIME + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
    until = (BASE_TIME + timedelta(minutes=60)).strftime("%Y-%m-%dT%H:%M")
    page = client.get(
        "/dashboard/queue",
        params={
            "line": "line-b",
            "camera": "cam-2",
            "model_version": "m2",
            "verdict": "defect",
            "since": since,
            "until": until,
        },
    )
    assert re.findall(r'data-href="/dashboard/inspections/([0-9a-f-]+)\?', page.text) == [wanted.id]


def test_bad_filters_and_cursors_get_400(client):
    log_in(client, "vera")
    assert client.get("/dashboard/queue", params={"sort": "random"}).status_code == 400
    assert client.get("/dashboard/queue", params={"since": "yesterday"}).status_code == 400
    # Valid ISO text whose conversion to UTC leaves the calendar.
    assert client.get("/dashboard/queue", params={"since": "0001-01-01T00:00+01:00"}).status_code == 400
    assert client.get("/dashboard/queue", params={"until": "9999-12-31T23:59-01:00"}).status_code == 400
    assert client.get("/dashboard/queue", params={"cursor": "%%%"}).status_code == 400
    time_cursor = Cursor(value="2026-01-01T00:00:00+00:00", inspection_id="x").encode()
    assert client.get("/dashboard/queue", params={"cursor": time_cursor}).status_code == 400


# --- reviewing -------------------------------------------------------------------------------------------


def test_review_is_stored_and_leads_to_the_next_inspection(world, client):
    first = add_inspection(world, score=0.95)
    second = add_inspection(world, score=0.85)
    csrf = log_in(client, "rita")
    page = client.get(f"/dashboard/inspections/{first.id}")
    assert f"/dashboard/inspections/{second.id}?" in page.text  # the "next (j)" link
    reply = client.post(
        f"/dashboard/inspections/{first.id}/review?review_state=unreviewed",
        data={"verdict": "reject", "comment": "glare", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"].startswith(f"/dashboard/inspections/{second.id}?")
    (stored,) = reviews_of(world, first.id)
    assert (stored.verdict, stored.comment, stored.mask_key) == ("reject", "glare", None)
    open_queue = client.get("/dashboard/queue").text
    assert first.id not in open_queue and second.id in open_queue
    assert first.id in client.get("/dashboard/queue", params={"review_state": "reviewed"}).text


def test_one_decision_per_reviewer_a_second_replaces_the_first(world, client):
    item = add_inspection(world, score=0.9, width=64, height=48)
    csrf = log_in(client, "rita")
    saved = client.post(
        f"/dashboard/inspections/{item.id}/review",
        data={"verdict": "confirm"},
        files={"mask": ("mask.png", mask_png(64, 48, (4, 4, 10, 10)), "image/png")},
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert saved.status_code == 200, saved.text
    client.post(f"/dashboard/inspections/{item.id}/review", data={"verdict": "reject", "csrf_token": csrf})
    (only,) = reviews_of(world, item.id)  # replaced, not stacked
    assert (only.verdict, only.mask_key) == ("reject", None)

    other = TestClient(dashboard_app(world))
    other_csrf = log_in(other, "ada")
    other.post(
        f"/dashboard/inspections/{item.id}/review", data={"verdict": "confirm", "csrf_token": other_csrf}
    )
    by_reviewer = {review.reviewer_id: review.verdict for review in reviews_of(world, item.id)}
    assert sorted(by_reviewer.values()) == ["confirm", "reject"]  # each reviewer keeps their own decision
    page = client.get(f"/dashboard/inspections/{item.id}").text
    assert page.count('<span class="badge review-') == 2


def test_export_follows_the_replacing_decision(world, client):
    item = add_inspection(world, score=0.9, width=64, height=48)
    csrf = log_in(client, "rita")
    client.post(f"/dashboard/inspections/{item.id}/review", data={"verdict": "reject", "csrf_token": csrf})
    client.post(
        f"/dashboard/inspections/{item.id}/review",
        data={"verdict": "confirm"},
        files={"mask": ("mask.png", mask_png(64, 48, (4, 4, 10, 10)), "image/png")},
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    archive = zipfile.ZipFile(io.BytesIO(client.get("/dashboard/export.zip").content))
    (exported,) = json.loads(archive.read("manifest.json"))["items"]
    assert (exported["verdict"], exported["mask_source"]) == ("confirm", "corrected")
    assert (np.asarray(Image.open(io.BytesIO(archive.read(exported["mask"])))) == 255).sum() == 100


def test_unknown_inspection_and_verdict_are_client_errors(world, client):
    item = add_inspection(world, score=0.9)
    csrf = log_in(client, "rita")
    assert client.get("/dashboard/inspections/nope").status_code == 404
    bad = client.post(
        f"/dashboard/inspections/{item.id}/review", data={"verdict": "maybe", "csrf_token": csrf}
    )
    assert bad.status_code == 422


def test_corrected_mask_is_stored_canonically_and_served_back(world, client):
    item = add_inspection(world, score=0.9, width=64, height=48)
    csrf = log_in(client, "rita")
    # What the browser sends: an RGBA canvas export, white where painted.
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    rgba.paste((255, 255, 255, 255), (10, 10, 20, 30))
    upload = io.BytesIO()
    rgba.save(upload, format="PNG")
    reply = client.post(
        f"/dashboard/inspections/{item.id}/review",
        data={"verdict": "confirm"},
        files={"mask": ("mask.png", upload.getvalue(), "image/png")},
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    (stored,) = reviews_of(world, item.id)
    assert stored.mask_key == body["mask_key"]
    served = client.get(f"/dashboard/inspections/{item.id}/mask.png")
    assert served.status_code == 200
    mask = Image.open(io.BytesIO(served.content))
    assert mask.mode == "L" and mask.size == (64, 48)
    pixels = np.asarray(mask)
    assert set(np.unique(pixels)) == {0, 255}
    assert (pixels == 255).sum() == 10 * 20


@pytest.mark.parametrize(
    ("verdict", "payload", "content_type", "status"),
    [
        ("confirm", mask_png(32, 48, (0, 0, 4, 4)), "image/png", 400),  # wrong size
        ("confirm", b"\xff\xd8\xff\xe0 not a png", "image/png", 400),  # JPEG magic
        ("confirm", mask_png(64, 48, (0, 0, 4, 4)), "image/jpeg", 415),  # declared type
        ("confirm", b"", "image/png", 400),  # empty
        ("confirm", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 400),  # truncated
        ("reject", mask_png(64, 48, (0, 0, 4, 4)), "image/png", 400),  # a false alarm has no mask
    ],
)
def test_bad_masks_are_refused(world, client, verdict, payload, content_type, status):
    item = add_inspection(world, score=0.9, width=64, height=48)
    csrf = log_in(client, "rita")
    reply = client.post(
        f"/dashboard/inspections/{item.id}/review",
        data={"verdict": verdict, "csrf_token": csrf},
        files={"mask": ("mask.png", payload, content_type)},
    )
    assert reply.status_code == status, reply.text
    assert reviews_of(world, item.id) == []


def test_inspection_page_carries_overlays_and_blobs_are_served(world, client):
    item = add_inspection(world, score=0.9, width=64, height=48)
    log_in(client, "rita")
    page = client.get(f"/dashboard/inspections/{item.id}").text
    assert 'data-width="64"' in page and 'data-threshold="0.5"' in page
    assert "<rect" in page  # the region outline
    image = client.get(f"/dashboard/inspections/{item.id}/image")
    assert image.headers["content-type"] == "image/png" and image.content == world.blobs.read(item.image_key)
    assert client.get(f"/dashboard/inspections/{item.id}/map.png").content == world.blobs.read(item.map_key)
    assert client.get(f"/dashboard/inspections/{item.id}/mask.png").status_code == 404


def test_queue_rows_carry_thumbnails_and_frame_ids(world, client):
    item = add_inspection(world, score=0.9, width=200, height=100)
    log_in(client, "vera")
    queue = client.get("/dashboard/queue").text
    assert item.frame_id in queue
    thumb_url = f"/dashboard/inspections/{item.id}/thumb.jpg"
    assert f'src="{thumb_url}"' in queue
    thumb = client.get(thumb_url)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (128, 64)  # aspect ratio kept
    assert client.get("/dashboard/inspections/nope/thumb.jpg").status_code == 404


def test_thumbnail_of_a_frame_whose_file_is_gone_is_a_404(world, client):
    item = add_inspection(world, score=0.9)
    world.blobs.path(item.image_key).unlink()
    log_in(client, "vera")
    reply = client.get(f"/dashboard/inspections/{item.id}/thumb.jpg")
    assert reply.status_code == 404 and "missing" in reply.json()["detail"]


def test_thumbnail_of_a_large_jpeg_is_decoded_reduced_and_keeps_its_aspect_ratio():
    left_dark = np.full((1500, 3000, 3), 200, np.uint8)
    left_dark[:, :1500] = 40
    encoded = io.BytesIO()
    Image.fromarray(left_dark).save(encoded, format="JPEG", quality=90)
    thumbnail = Image.open(io.BytesIO(thumbnail_jpeg(encoded.getvalue(), "image/jpeg")))
    assert thumbnail.size == (128, 64)
    pixels = np.asarray(thumbnail.convert("L"), dtype=np.float32)
    assert abs(pixels[:, :60].mean() - 40) < 6 and abs(pixels[:, 68:].mean() - 200) < 6  # not mirrored


def test_queue_dates_are_iso_text_fields(world, client):
    early = add_inspection(world, score=0.9, minutes=0)
    late = add_inspection(world, score=0.8, minutes=24 * 60)
    log_in(client, "vera")
    # A date alone means its midnight, UTC; the field shows the ISO form back, never a locale's.
    page = client.get("/dashboard/queue", params={"since": "2026-03-03"}).text
    assert late.id in page and early.id not in page
    since_field = re.search(r'<input type="text" name="since" value="([^"]*)"', page)
    assert since_field and since_field.group(1) == "2026-03-03T00:00"
    assert 'type="datetime-local"' not in page and 'type="date"' not in page
    spaced = client.get("/dashboard/queue", params={"until": "2026-03-02 09:00"}).text
    assert early.id in spaced and late.id not in spaced
    assert client.get("/dashboard/queue", params={"since": "03/02/2026"}).status_code == 400


# --- statistics, models, admin ------------------------------------------------------------------------------


def test_stats_page_charts_defect_rate_and_measures_precision(world, client):
    flagged = [add_inspection(world, score=0.9, minutes=minute, line="line-a") for minute in (0, 5, 70)]
    add_inspection(world, score=0.1, minutes=10, line="line-b")
    csrf = log_in(client, "rita")
    for item, verdict in zip(flagged, ("confirm", "confirm", "reject"), strict=True):
        client.post(f"/dashboard/inspections/{item.id}/review", data={"verdict": verdict, "csrf_token": csrf})
    page = client.get("/dashboard/stats")
    assert page.status_code == 200
    chart = re.search(r'<svg class="chart" id="defect-rate-chart".*?</svg>', page.text, re.DOTALL).group(0)
    assert chart.count("<polyline") == 2  # one series per line
    precision_row = re.search(
        r'<table id="precision">.*?<td>m1</td><td class="num">3</td>\s*<td class="num">([^<]+)</td>',
        page.text,
        re.DOTALL,
    )
    assert precision_row.group(1) == "66.7%"
    assert re.search(r"<td>rita</td><td class=\"num\">3</td>", page.text)


class RecordingModels:
    """Stands in for the engine's model manager: records the hot swaps the dashboard asks for."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def activate(self, version: str):
        self.calls.append(f"activate {version}")
        return type("Served", (), {"version": version})()

    async def rollback(self):
        self.calls.append("rollback")
        return type("Served", (), {"version": "m0"})()


def test_models_page_swaps_only_for_admins(world):
    app = dashboard_app(world)
    app.state.service.models = RecordingModels()
    with TestClient(app) as client:
        csrf = log_in(client, "rita")
        assert client.get("/dashboard/models").status_code == 200
        # The flash names only a registered version, never whatever a crafted link says.
        assert "now serving" not in client.get("/dashboard/models", params={"changed": "made-up"}).text
        assert client.post("/dashboard/models/m2/activate", data={"csrf_token": csrf}).status_code == 403
    with TestClient(app) as client:
        csrf = log_in(client, "ada")
        assert client.post("/dashboard/models/m2/activate", data={}).status_code == 403  # no CSRF token
        swapped = client.post(
            "/dashboard/models/m2/activate", data={"csrf_token": csrf}, follow_redirects=False
        )
        assert swapped.status_code == 303 and swapped.headers["location"] == "/dashboard/models?changed=m2"
        client.post("/dashboard/models/rollback", data={"csrf_token": csrf})
    assert app.state.service.models.calls == ["activate m2", "rollback"]


def test_admin_creates_users_and_cameras_with_a_key_shown_once(world, client):
    csrf = log_in(client, "ada")
    made = client.post(
        "/dashboard/admin/users",
        data={"username": "otto", "password": "long enough pw", "role": "reviewer", "csrf_token": csrf},
    )
    assert made.status_code == 200 and "otto" in made.text
    assert (
        client.post(
            "/dashboard/admin/users",
            data={"username": "otto", "password": "long enough pw", "role": "viewer", "csrf_token": csrf},
        ).status_code
        == 409
    )
    assert (
        client.post(
            "/dashboard/admin/users",
            data={"username": "eve", "password": "short", "role": "viewer", "csrf_token": csrf},
        ).status_code
        == 400
    )
    camera = client.post(
        "/dashboard/admin/cameras", data={"name": "cam-9", "line": "line-c", "csrf_token": csrf}
    )
    key = re.search(r'<p class="secret">([^<]+)</p>', camera.text).group(1)
    with session_scope(world.sessions) as session:
        assert repositories.camera_for_key_hash(session, api_key_hash=hash_api_key(key)).name == "cam-9"
    assert key not in client.get("/dashboard/admin").text
    other = TestClient(dashboard_app(world))
    log_in(other, "otto", "long enough pw")
    assert other.get("/dashboard/queue").status_code == 200
