"""Error pages: a 4xx on a dashboard page is an HTML page; the JSON API and the mask editor keep JSON."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inspect_svc.main import create_app
from inspect_svc.schemas import UserCreate
from inspect_svc.storage import repositories
from inspect_svc.storage.db import make_engine, make_session_factory, session_scope
from tests.conftest import ADMIN, make_settings
from tests.utils.reviews import PASSWORD, log_in

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def app_client(tmp_path, test_bundle) -> Iterator[TestClient]:
    """The whole service (its exception handlers included) with a viewer account."""
    settings = make_settings(tmp_path, model=test_bundle.root, dashboard_secure_cookies=False)
    with TestClient(create_app(settings)) as client:
        engine = make_engine(settings.database_url)
        with session_scope(make_session_factory(engine)) as session:
            repositories.create_user(
                session, user=UserCreate(username="vera", password=PASSWORD, role="viewer")
            )
        engine.dispose()
        yield client


def assert_error_page(reply, status: int, message: str) -> None:
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("text/html")
    assert "<!doctype html>" in reply.text.lower()
    assert message in reply.text
    assert "Back to the queue" in reply.text


def test_missing_inspection_is_an_html_404(app_client):
    log_in(app_client, "vera")
    assert_error_page(
        app_client.get("/dashboard/inspections/nope", headers=BROWSER), 404, "no inspection nope"
    )


def test_page_above_the_operators_role_is_an_html_403(app_client):
    log_in(app_client, "vera")
    assert_error_page(app_client.get("/dashboard/admin", headers=BROWSER), 403, "this needs the admin role")


def test_unknown_dashboard_path_is_an_html_404_even_logged_out(app_client):
    assert_error_page(app_client.get("/dashboard/nowhere"), 404, "Not Found")


def test_error_message_is_escaped(app_client):
    log_in(app_client, "vera")
    reply = app_client.get("/dashboard/inspections/<b>bold", headers=BROWSER)
    assert reply.status_code == 404
    assert "<b>bold" not in reply.text and "&lt;b&gt;bold" in reply.text


def test_logged_out_page_view_still_redirects_to_login(app_client):
    reply = app_client.get("/dashboard/queue", headers=BROWSER, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/dashboard/login?next=")


def test_mask_editor_asking_for_json_gets_json(app_client):
    csrf = log_in(app_client, "vera")
    reply = app_client.post(
        "/dashboard/inspections/nope/review",
        data={"verdict": "confirm"},
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert reply.status_code == 403  # a viewer may not review
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"detail": "this needs the reviewer role"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("get", "/inspections/nope", ADMIN, 404),
        ("post", "/models/nope/activate", ADMIN, 404),
        ("get", "/cameras", {"Authorization": "Bearer wrong"}, 401),
        ("get", "/no-such-endpoint", {}, 404),
    ],
)
def test_api_errors_stay_json_even_for_browsers(app_client, method, path, headers, status):
    reply = app_client.request(method, path, headers={**BROWSER, **headers})
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert "detail" in reply.json()
