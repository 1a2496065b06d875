"""The dashboard in a real headless Chromium: log in, look at a frame, review by keyboard, paint a mask.

A real uvicorn serves the dashboard on 127.0.0.1; Playwright drives Debian's chromium. Screenshots of
each step land in $INSPECT_TEST_ARTIFACTS/browser (default: a directory under pytest's tmp dir, named
in the test log) for a person to look at.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from inspect_svc.storage.db import session_scope
from inspect_svc.storage.models import ModelVersionDB, ReviewDB
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
    # Screenshots in the frame's own colour space, so "the original pixels" can be compared exactly.
    "--force-color-profile=srgb",
]
SCREENS = {"1366x768": {"width": 1366, "height": 768}, "1920x1080": {"width": 1920, "height": 1080}}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    chosen = os.environ.get("INSPECT_TEST_ARTIFACTS")
    root = Path(chosen) / "browser" if chosen else tmp_path_factory.mktemp("browser-artifacts")
    root.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots in {root}")
    return root


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


def shoot(page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


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


def all_reviews(world) -> list[ReviewDB]:
    with session_scope(world.sessions) as session:
        return list(session.scalars(select(ReviewDB).order_by(ReviewDB.id)))


def smooth_frame(width: int, height: int) -> tuple[bytes, np.ndarray]:
    """A frame without pixel noise (so a resampled view can be compared with it) and a dark scratch."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack(
        [40 + 180 * xx / width, 40 + 180 * yy / height, 128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 17.0)],
        axis=-1,
    )
    pixels[height // 2 - 2 : height // 2 + 2, width // 4 : width // 2] = 15
    frame = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue(), frame


def box_of(page, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return box


def grab(page, box: dict[str, float]) -> np.ndarray:
    """The page's pixels inside `box`, as RGB."""
    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def displayed_scale(page) -> float:
    return float(page.get_attribute("#viewer", "data-scale"))


def assert_aspect_kept(box: dict[str, float], width: int, height: int) -> None:
    """The displayed frame has the image's aspect ratio, to within one screen pixel."""
    assert abs(box["width"] - box["height"] * width / height) <= 1.0, (box, width, height)


def image_point(box: dict[str, float], x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """The image pixel under the screen point (x, y), from where the frame is displayed."""
    return (x - box["x"]) * width / box["width"], (y - box["y"]) * height / box["height"]


def screen_point(box: dict[str, float], ix: float, iy: float, width: int, height: int) -> tuple[float, float]:
    return box["x"] + ix * box["width"] / width, box["y"] + iy * box["height"] / height


def test_review_the_queue_by_keyboard_paint_a_mask_and_export(world, server_url, browser, artifacts):
    first, second, third = (
        add_inspection(world, score=score, width=160, height=120) for score in (0.93, 0.81, 0.72)
    )
    page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900}).new_page()

    page.goto(f"{server_url}/dashboard/queue")
    shoot(page, artifacts, "01-login")
    log_in(page, server_url, "rita")
    shoot(page, artifacts, "02-queue")

    # The queue: j/k move the selection, Enter opens it.
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{first.id}"))
    wait_for_viewer(page)
    page.keyboard.press("h")  # the heat layer, for the screenshot
    shoot(page, artifacts, "03-inspection")

    page.keyboard.press("a")  # confirm defect -> the next inspection
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{second.id}"))
    wait_for_viewer(page)
    page.keyboard.press("r")  # false alarm -> the next one
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{third.id}"))
    wait_for_viewer(page)

    # Zoom in (the mask must follow the pointer at any zoom), then brush a stroke across the lower
    # part of the frame, far from the predicted blob, and save it as the correction.
    page.keyboard.press("+")
    assert page.locator("#mask").is_hidden()  # the mask layer shows only while correcting
    page.keyboard.press("b")
    assert page.locator("#mask").is_visible()
    box = box_of(page, "#mask")
    start = screen_point(box, 160 * 0.3, 120 * 0.8, 160, 120)
    end = screen_point(box, 160 * 0.7, 120 * 0.8, 160, 120)
    viewport = box_of(page, "#viewport-main")
    assert viewport["y"] < start[1] < viewport["y"] + viewport["height"]  # the stroke is on screen
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    page.keyboard.press("s")
    page.wait_for_selector("#viewer[data-saved=true]")
    history = page.locator("#review-history li")
    assert history.count() == 1 and "corrected mask" in history.inner_text()  # the decision, shown
    shoot(page, artifacts, "04-mask-corrected")

    reviews = latest_reviews(world)
    assert (reviews[first.id].verdict, reviews[second.id].verdict, reviews[third.id].verdict) == (
        "confirm",
        "reject",
        "confirm",
    )
    mask = np.asarray(Image.open(io.BytesIO(world.blobs.read(reviews[third.id].mask_key))))
    stroke_row = mask[int(120 * 0.8)]
    assert stroke_row[int(160 * 0.35) : int(160 * 0.65)].min() == 255  # the painted stroke
    assert (
        mask[int(120 * 0.8) - 12 : int(120 * 0.8) + 13].any(axis=0)[: int(160 * 0.25)].sum() == 0
    )  # nothing left of it
    assert mask[int(120 * 0.5), int(160 / 3)] == 255  # the predicted blob it started from

    # Confirming after saving the correction is the same decision: one review, the mask kept.
    page.keyboard.press("a")
    page.wait_for_url(re.compile(r"/dashboard/queue"))
    decisions = [review for review in all_reviews(world) if review.inspection_id == third.id]
    assert len(decisions) == 1
    assert decisions[0].verdict == "confirm" and decisions[0].mask_key is not None

    # Open it again in the whole queue (reviewed ones too): the saved mask comes back; k goes back one.
    page.goto(f"{server_url}/dashboard/inspections/{third.id}?review_state=any")
    wait_for_viewer(page)
    assert page.get_attribute("#viewer", "data-mask-url").endswith(f"/{third.id}/mask.png")
    page.keyboard.press("k")
    page.wait_for_url(re.compile(rf"/dashboard/inspections/{second.id}"))

    page.goto(f"{server_url}/dashboard/models")
    with page.expect_download() as download_info:
        page.click("#export-link")
    archive_path = artifacts / "reviewed.zip"
    download_info.value.save_as(archive_path)
    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        sources = {item["inspection_id"]: item["mask_source"] for item in manifest["items"]}
        assert sources == {first.id: "predicted", second.id: "none", third.id: "corrected"}
        assert f"masks/{third.id}.png" in archive.namelist()


def test_viewer_cannot_review_and_a_stranger_sees_only_the_login(world, server_url, browser, artifacts):
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
    shoot(page, artifacts, "05-viewer")
    assert latest_reviews(world) == {}


@pytest.mark.parametrize("screen", SCREENS, ids=SCREENS)
def test_frame_is_never_stretched_and_image_only_shows_the_original_pixels(
    world, server_url, browser, artifacts, screen
):
    width, height = 400, 250
    frame_png, frame = smooth_frame(width, height)
    item = add_inspection(world, score=0.9, width=width, height=height, frame_png=frame_png)
    page = browser.new_context(viewport=SCREENS[screen]).new_page()
    log_in(page, server_url, "rita")
    page.goto(f"{server_url}/dashboard/inspections/{item.id}")
    wait_for_viewer(page)

    # Fit to view: uniform scale, letterboxed in the viewport, touching it on one axis.
    box, viewport = box_of(page, "#frame"), box_of(page, "#viewport-main")
    assert_aspect_kept(box, width, height)
    assert (
        box["x"] >= viewport["x"] - 0.5 and box["x"] + box["width"] <= viewport["x"] + viewport["width"] + 0.5
    )
    assert (
        box["y"] >= viewport["y"] - 0.5
        and box["y"] + box["height"] <= viewport["y"] + viewport["height"] + 0.5
    )
    assert min(abs(box["width"] - viewport["width"]), abs(box["height"] - viewport["height"])) <= 1.0
    assert page.locator("#heat").is_hidden()  # the untouched frame comes first
    shoot(page, artifacts, f"10-fit-{screen}")

    page.keyboard.press("h")
    assert page.locator("#heat").is_visible() and page.locator("#colour-scale").is_visible()
    with_heat = grab(page, box)
    shoot(page, artifacts, f"11-heat-{screen}")
    page.keyboard.press("i")  # image only: no overlay anywhere
    for layer in ("#heat", "#regions", "#mask"):
        assert page.locator(layer).is_hidden()
    shown = grab(page, box)
    expected = np.asarray(
        Image.fromarray(frame).resize((shown.shape[1], shown.shape[0]), Image.Resampling.BILINEAR)
    ).astype(np.int16)
    resampling_error = np.abs(shown - expected).mean()
    assert resampling_error < 2.0, resampling_error  # the frame, only resampled to the fitted size
    assert np.abs(with_heat - expected).mean() > 5 * resampling_error + 10  # and the heat did cover it

    # 1:1: every displayed pixel is the stored frame's.
    page.keyboard.press("1")
    assert displayed_scale(page) == 1.0
    actual = box_of(page, "#frame")
    assert (actual["width"], actual["height"]) == (width, height)
    assert np.array_equal(grab(page, actual), frame.astype(np.int16))
    shoot(page, artifacts, f"12-actual-pixels-{screen}")


@pytest.mark.parametrize("screen", SCREENS, ids=SCREENS)
def test_zoom_pan_heat_toggle_and_side_by_side(world, server_url, browser, artifacts, screen):
    width, height = 400, 250
    frame_png, _ = smooth_frame(width, height)
    item = add_inspection(world, score=0.9, width=width, height=height, frame_png=frame_png)
    page = browser.new_context(viewport=SCREENS[screen]).new_page()
    log_in(page, server_url, "vera")  # viewing needs no reviewer role
    page.goto(f"{server_url}/dashboard/inspections/{item.id}")
    wait_for_viewer(page)
    fitted = box_of(page, "#frame")
    fit_scale = displayed_scale(page)

    page.keyboard.press("+")
    zoomed = box_of(page, "#frame")
    assert zoomed["width"] == pytest.approx(fitted["width"] * 1.25, rel=1e-3)
    assert_aspect_kept(zoomed, width, height)

    # The wheel zooms about the cursor: the image point under it stays under it.
    viewport = box_of(page, "#viewport-main")
    cursor = (viewport["x"] + viewport["width"] * 0.3, viewport["y"] + viewport["height"] * 0.4)
    before = image_point(zoomed, *cursor, width, height)
    scale_before = displayed_scale(page)
    page.mouse.move(*cursor)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"Number(document.getElementById('viewer').dataset.scale) > {scale_before + 1e-3}")
    wheeled = box_of(page, "#frame")
    after = image_point(wheeled, *cursor, width, height)
    assert math.dist(before, after) < 0.5
    assert_aspect_kept(wheeled, width, height)

    # Dragging pans the frame by the pointer's movement (zoomed in far enough to have room to pan).
    page.keyboard.press("+")
    page.keyboard.press("+")
    centre = (viewport["x"] + viewport["width"] / 2, viewport["y"] + viewport["height"] / 2)
    grabbed = box_of(page, "#frame")
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 60, centre[1] + 40, steps=5)
    page.mouse.up()
    panned = box_of(page, "#frame")
    moved = (panned["x"] - grabbed["x"], panned["y"] - grabbed["y"])
    assert moved == (pytest.approx(60, abs=0.5), pytest.approx(40, abs=0.5))
    page.keyboard.press("-")
    assert box_of(page, "#frame")["width"] == pytest.approx(panned["width"] / 1.25, rel=1e-3)
    # Outlines stay one thin line on screen however far the frame is zoomed.
    stroke = page.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('#regions rect, #regions polygon')).strokeWidth)"
    )
    assert stroke * displayed_scale(page) == pytest.approx(1.5, abs=0.05)  # screen pixels
    shoot(page, artifacts, f"20-zoomed-{screen}")
    page.keyboard.press("0")
    assert displayed_scale(page) == pytest.approx(fit_scale, rel=1e-6)

    # h shows and hides the heat layer; its colour scale marks the stored threshold.
    page.keyboard.press("h")
    assert page.locator("#heat").is_visible()
    mark, bar = box_of(page, ".threshold-mark"), box_of(page, "#scale-bar")
    assert mark["x"] + mark["width"] / 2 == pytest.approx(
        bar["x"] + 0.5 * bar["width"], abs=1.5
    )  # threshold 0.5
    page.keyboard.press("h")
    assert page.locator("#heat").is_hidden()

    # v: image | map, both at the same scale and place, each keeping the aspect ratio.
    page.keyboard.press("v")
    assert page.locator("#viewport-map").is_visible() and page.locator("#heat-side").is_visible()
    left, right = box_of(page, "#frame"), box_of(page, "#heat-side")
    assert_aspect_kept(left, width, height)
    assert (right["width"], right["height"]) == (pytest.approx(left["width"]), pytest.approx(left["height"]))
    assert right["x"] > left["x"] + left["width"] - 1
    page.keyboard.press("+")
    left, right = box_of(page, "#frame"), box_of(page, "#heat-side")
    assert right["width"] == pytest.approx(left["width"])
    shoot(page, artifacts, f"21-side-by-side-{screen}")
    page.keyboard.press("v")
    assert page.locator("#viewport-map").is_hidden()


def test_queue_shows_thumbnails_frame_ids_iso_dates_and_models_fit_a_small_screen(
    world, server_url, browser, artifacts
):
    items = [
        add_inspection(world, score=score, minutes=minutes, width=160, height=96)
        for score, minutes in ((0.9, 0), (0.7, 90))
    ]
    with session_scope(world.sessions) as session:
        for index in range(3):
            session.add(
                ModelVersionDB(
                    version=f"densedino-vit-small-hybrid-context15-pixels4-steps900-split{index}",
                    bundle_path=f"/srv/models/split{index}",
                    kind="hybrid-segmentation-with-anomaly-context",
                    backbone="vit_small_patch8_224.densedino-crr-inspection-photometric",
                    input_size=128,
                    pixel_threshold=0.41,
                    image_threshold=0.63,
                    metrics={"pixel_auroc": 0.98, "aupro": 0.92, "image_auroc": 0.97, "f1": 0.7, "iou": 0.55},
                    bundle_created_at=datetime(2026, 12, 1, tzinfo=timezone.utc),
                    is_active=index == 0,
                )
            )
    page = browser.new_context(viewport=SCREENS["1366x768"]).new_page()
    log_in(page, server_url, "rita")
    page.goto(f"{server_url}/dashboard/queue?review_state=any")
    for item in items:
        row = page.locator(f"#queue tr:has-text('{item.frame_id}')")
        assert row.count() == 1
        thumbnail = row.locator("td.thumb img")
        thumbnail.scroll_into_view_if_needed()
        page.wait_for_function(
            "(image) => image.complete && image.naturalWidth > 0", arg=thumbnail.element_handle()
        )
        natural = thumbnail.evaluate("(image) => [image.naturalWidth, image.naturalHeight]")
        assert natural[0] / natural[1] == pytest.approx(160 / 96, abs=0.02)  # a thumbnail, not stretched

    # The dates are typed and shown as ISO text (2026-03-02T08:30), whatever the desktop's locale.
    since = page.locator("input[name=since]")
    assert since.get_attribute("type") == "text"
    since.fill("2026-03-02T08:30")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"since=2026-03-02T08%3A30"))
    assert page.locator("input[name=since]").input_value() == "2026-03-02T08:30"
    assert page.locator(f"#queue tr:has-text('{items[1].frame_id}')").count() == 1
    assert page.locator(f"#queue tr:has-text('{items[0].frame_id}')").count() == 0
    assert "2026-03-02 09:30:00" in page.locator("#queue").inner_text()
    shoot(page, artifacts, "30-queue-1366")

    page.goto(f"{server_url}/dashboard/models")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366  # the page does not run off
    card = box_of(page, "#models >> xpath=ancestor::section")
    assert card["x"] + card["width"] <= 1366
    # Long names wrap: every column, the metrics included, is on screen without scrolling.
    assert page.evaluate(
        "(() => { const t = document.getElementById('models');"
        " return t.scrollWidth <= t.parentElement.clientWidth; })()"
    )
    last_column = box_of(page, "#models thead th:last-child")
    assert last_column["x"] + last_column["width"] <= card["x"] + card["width"]
    shoot(page, artifacts, "31-models-1366")
