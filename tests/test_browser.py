"""The dashboard in a real headless Chromium: log in, review by keyboard, paint a mask, export.

A real uvicorn serves the dashboard on 127.0.0.1; Playwright drives Debian's chromium. Screenshots of
each step land in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from inspect_svc.storage.db import session_scope
from inspect_svc.storage.models import ReviewDB
from tests.utils.live_server import live_server
from tests.utils.reviews import PASSWORD, add_inspection, add_user, dashboard_app, make_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def world(tmp_path):
    world = make_world(tmp_path)
    add_user(world, "rita", "reviewer")
    add_user(world, "vera", "viewer")
    return world


@pytest.fixture
def server_url(world) -> Iterator[str]:
    with live_server(dashboard_app(world)) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/dashboard/queue")
    page.wait_for_url(re.compile(r"/dashboard/login\?next="))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/queue"))


def wait_for_viewer(page) -> None:
    page.wait_for_selector("#viewer[data-ready=true]")


def latest_reviews(world) -> dict[str, ReviewDB]:
    with session_scope(world.sessions) as session:
        rows = session.scalars(select(ReviewDB).order_by(ReviewDB.id))
        return {row.inspection_id: row for row in rows}


def test_review_the_queue_by_keyboard_paint_a_mask_and_export(world, server_url, browser):
    first, second, third = (
        add_inspection(world, score=score, width=160, height=120) for score in (0.93, 0.81, 0.72)
    )
    page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900}).new_page()

    page.goto(f"{server_url}/dashboard/queue")
    shoot(page, "01-login")
    log_in(page, server_url, "rita")
    shoot(page, "02-queue")

    # The queue: j/k move the selection, Enter opens it.
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{first.id}"))
    wait_for_viewer(page)
    page.fill("#opacity", "0.8")
    shoot(page, "03-inspection")

    page.keyboard.press("a")  # confirm defect -> the next inspection
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{second.id}"))
    wait_for_viewer(page)
    page.keyboard.press("r")  # false alarm -> the next one
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{third.id}"))
    wait_for_viewer(page)

    # Brush a stroke across the lower part of the frame (far from the predicted blob), then save.
    page.keyboard.press("b")
    box = page.locator("#mask").bounding_box()
    start = (box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8)
    end = (box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    page.keyboard.press("s")
    page.wait_for_selector("#viewer[data-saved=true]")
    shoot(page, "04-mask-corrected")

    reviews = latest_reviews(world)
    assert (reviews[first.id].verdict, reviews[second.id].verdict, reviews[third.id].verdict) == (
        "confirm",
        "reject",
        "confirm",
    )
    mask = np.asarray(Image.open(io.BytesIO(world.blobs.read(reviews[third.id].mask_key))))
    stroke_row = mask[int(120 * 0.8)]
    assert stroke_row[int(160 * 0.3) : int(160 * 0.7)].min() == 255  # the painted stroke
    assert mask[int(120 * 0.5), int(160 / 3)] == 255  # the predicted blob it started from

    # Open it again in the whole queue (reviewed ones too): the saved mask comes back; k goes back one.
    page.goto(f"{server_url}/dashboard/inspections/{third.id}?review_state=any")
    wait_for_viewer(page)
    assert page.get_attribute("#viewer", "data-mask-url").endswith(f"/{third.id}/mask.png")
    page.keyboard.press("k")
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{second.id}"))

    page.goto(f"{server_url}/dashboard/models")
    with page.expect_download() as download_info:
        page.click("#export-link")
    archive_path = ARTIFACTS / "reviewed.zip"
    download_info.value.save_as(archive_path)
    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        sources = {item["inspection_id"]: item["mask_source"] for item in manifest["items"]}
        assert sources == {first.id: "predicted", second.id: "none", third.id: "corrected"}
        assert f"masks/{third.id}.png" in archive.namelist()


def test_viewer_cannot_review_and_a_stranger_sees_only_the_login(world, server_url, browser):
    item = add_inspection(world, score=0.9, width=160, height=120)
    stranger = browser.new_context().new_page()
    stranger.goto(f"{server_url}/dashboard/inspections/{item.id}")
    assert "/dashboard/login" in stranger.url
    assert stranger.locator("#viewer, #queue, img").count() == 0  # nothing of the inspection is shown
    assert stranger.locator("input[name=password]").count() == 1

    page = browser.new_context().new_page()
    log_in(page, server_url, "vera")
    page.goto(f"{server_url}/dashboard/inspections/{item.id}")
    wait_for_viewer(page)
    assert page.locator("#review-form").count() == 0
    page.keyboard.press("a")
    page.wait_for_timeout(300)  # give a (wrongly) bound shortcut the chance to post
    shoot(page, "05-viewer")
    assert latest_reviews(world) == {}
