"""Decisions a line can trust: the image threshold for a target recall, synthetic validation defects,
per-line calibration written into the bundle, and bundles written before these fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from inspect_svc.bundle import Bundle, Thresholds, load_bundle
from inspect_svc.engine.predictor import Predictor
from inspect_svc.engine.regions import image_score, summarize
from tests.synthetic_labeled import model_cli, texture
from tests.utils.onnx_models import make_test_bundle
from training.data.copy_paste import cut_defect_pieces
from training.decision import calibrate_line, choose_image_threshold, synthetic_defects
from training.model_config import default_top_pixels

runner = CliRunner()


def _maps_scoring(scores: list[float], size: int = 8) -> list[np.ndarray]:
    """Maps whose image score (any k up to 4) is exactly the given value: a 2x2 hot spot on zeros."""
    maps = []
    for value in scores:
        prob = np.zeros((size, size), np.float32)
        prob[2:4, 2:4] = value
        maps.append(prob)
    return maps


def test_threshold_hits_the_target_recall_on_a_constructed_validation_set() -> None:
    rng = np.random.default_rng(0)
    real = _maps_scoring(list(rng.uniform(0.5, 1.0, 5)))
    synthetic = _maps_scoring(list(rng.uniform(0.3, 1.0, 35)))
    normal = _maps_scoring(list(rng.uniform(0.0, 0.6, 50)))
    decision = choose_image_threshold(real, synthetic, normal, target_recall=0.95, top_pixels=4)
    defect_scores = np.array([image_score(m, 4) for m in real + synthetic])
    normal_scores = np.array([image_score(m, 4) for m in normal])
    caught = np.mean(defect_scores >= decision.threshold)
    assert caught >= 0.95 and decision.expected_recall == pytest.approx(caught)
    # The highest such threshold: above the 38th highest defect score (of 40) recall falls below 0.95.
    needed = np.sort(defect_scores)[::-1][37]
    assert decision.threshold <= needed and np.mean(defect_scores > needed) < 0.95
    assert not np.any(
        (normal_scores >= decision.threshold) & (normal_scores < needed)
    )  # no alarm bought for nothing
    assert decision.expected_false_alarm_rate == pytest.approx(np.mean(normal_scores >= decision.threshold))
    assert (decision.real_defective, decision.synthetic_defective, decision.normal_images) == (5, 35, 50)


def test_threshold_stops_above_a_normal_image_that_a_defect_does_not_need() -> None:
    # Recall 2/3 needs the 0.8 defect; a normal image at 0.6 sits between it and the next defect (0.2).
    decision = choose_image_threshold(
        _maps_scoring([0.9, 0.8]),
        _maps_scoring([0.2]),
        _maps_scoring([0.6, 0.1]),
        target_recall=0.6,
        top_pixels=4,
    )
    assert decision.threshold == pytest.approx(0.7)
    assert decision.expected_false_alarm_rate == 0.0 and decision.expected_recall == pytest.approx(2 / 3)
    assert decision.expected_recall_real == 1.0


def test_lower_target_recall_gives_fewer_false_alarms() -> None:
    rng = np.random.default_rng(1)
    defects, normal = (
        _maps_scoring(list(rng.uniform(0.2, 1, 40))),
        _maps_scoring(list(rng.uniform(0, 0.7, 40))),
    )
    strict = choose_image_threshold(defects, [], normal, target_recall=0.99, top_pixels=1)
    loose = choose_image_threshold(defects, [], normal, target_recall=0.5, top_pixels=1)
    assert loose.threshold > strict.threshold
    assert loose.expected_false_alarm_rate <= strict.expected_false_alarm_rate
    assert np.isnan(
        choose_image_threshold([], defects, normal, target_recall=0.9, top_pixels=1).expected_recall_real
    )


def test_a_threshold_that_flags_most_good_parts_is_reported_as_such() -> None:
    # Every defect scores below every normal image: recall 1.0 costs flagging all of them.
    hopeless = choose_image_threshold(
        _maps_scoring([0.1, 0.2]), [], _maps_scoring([0.5, 0.6]), target_recall=1.0, top_pixels=4
    )
    assert hopeless.expected_false_alarm_rate == 1.0
    assert "flags 100% of the defect-free validation images" in (hopeless.warning() or "")
    fine = choose_image_threshold(
        _maps_scoring([0.9]), [], _maps_scoring([0.1]), target_recall=1.0, top_pixels=4
    )
    assert fine.warning() is None
    no_normals = choose_image_threshold(_maps_scoring([0.9]), [], [], target_recall=1.0, top_pixels=4)
    assert no_normals.warning() is None


def test_synthetic_defects_on_validation_normals() -> None:
    rng = np.random.default_rng(2)
    normals = [texture(rng, 64), texture(rng, 64)[:, :48]]  # a non-square image too
    defect_image, defect_mask = texture(rng, 64), np.zeros((64, 64), bool)
    defect_mask[20:30, 20:40] = True
    pieces = cut_defect_pieces([defect_image], [defect_mask])
    images, masks = synthetic_defects(normals, pieces, seed=0)
    assert len(images) >= 12 and all(m.any() for m in masks)
    assert all(
        i.shape == n.shape
        for i, n in zip(
            images, [normals[0]] * (len(images) // 2) + [normals[1]] * (len(images) // 2), strict=True
        )
    )
    # Outside its mask a synthetic defect leaves the clean image as it was.
    assert np.array_equal(images[0][~masks[0]], normals[0][~masks[0]])
    again, _ = synthetic_defects(normals, pieces, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(images, again, strict=True))


def test_default_top_pixels_follow_the_tile() -> None:
    assert default_top_pixels(32) == 1 and default_top_pixels(128) == 16 and default_top_pixels(224) == 49


def test_calibrate_line_keeps_false_alarms_within_the_target() -> None:
    rng = np.random.default_rng(3)
    normal = _maps_scoring(list(rng.uniform(0, 1, 200)))
    result = calibrate_line(normal, max_false_alarm_rate=0.02, top_pixels=4)
    scores = np.array([image_score(m, 4) for m in normal])
    assert (
        result.false_alarm_rate == pytest.approx(np.mean(scores >= result.image))
        and result.false_alarm_rate <= 0.02
    )
    assert np.mean(scores >= result.image - 1e-3) > 0.02  # as low as it goes: a little lower rejects more
    assert result.normal_images == 200


def _write_normals(folder: Path, count: int = 6, size: int = 40) -> Path:
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(texture(rng, size)).save(folder / f"ok_{index}.png")
    return folder


def test_calibrate_cli_writes_the_line_threshold_into_the_bundle(tmp_path: Path) -> None:
    bundle = make_test_bundle(tmp_path / "bundle")
    normals = _write_normals(tmp_path / "normal")
    result = runner.invoke(
        model_cli(),
        [
            "calibrate",
            "--model",
            str(bundle.root),
            "--normal",
            str(normals),
            "--line",
            "line-a",
            "--max-false-alarm-rate",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = load_bundle(bundle.root).manifest  # the graph's checksum still verifies
    calibration = manifest.line_calibration["line-a"]
    assert calibration.normal_images == 6 and calibration.false_alarm_rate <= 0.2
    predictor = Predictor(load_bundle(bundle.root))
    scores = [
        image_score(predictor.predict(np.asarray(Image.open(p).convert("RGB"))), 1)
        for p in sorted(normals.iterdir())
    ]
    assert calibration.false_alarm_rate == pytest.approx(np.mean(np.array(scores) >= calibration.image))
    assert manifest.thresholds_for("line-a").image == calibration.image
    assert manifest.thresholds_for("line-b") == manifest.thresholds == manifest.thresholds_for(None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--line", "no spaces"], "--line"),
        (["--line", "a", "--max-false-alarm-rate", "1"], "[0, 1)"),
    ],
)
def test_calibrate_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    bundle = make_test_bundle(tmp_path / "bundle")
    normals = _write_normals(tmp_path / "normal", count=2)
    result = runner.invoke(
        model_cli(), ["calibrate", "--model", str(bundle.root), "--normal", str(normals), *args]
    )
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_bundle_written_before_the_image_score_still_loads_and_scores_by_the_maximum(
    tmp_path: Path,
) -> None:
    bundle = make_test_bundle(tmp_path / "bundle", thresholds=Thresholds(pixel=0.5, image=0.8))
    manifest = json.loads((bundle.root / "model.json").read_text())
    for field in ("image_score", "line_calibration"):
        manifest.pop(field)
    (bundle.root / "model.json").write_text(json.dumps(manifest))
    old = load_bundle(bundle.root)
    assert old.manifest.image_score.top_pixels == 1 and old.manifest.line_calibration == {}
    prob = np.zeros((8, 8), np.float32)
    prob[0, 0] = 0.9  # one hot pixel decides, as it did
    verdict = summarize(
        prob, old.manifest.thresholds_for("line-a"), top_pixels=old.manifest.image_score.top_pixels
    )
    assert verdict.verdict == "defect" and verdict.score == pytest.approx(0.9)
    assert summarize(prob, old.manifest.thresholds, top_pixels=4).verdict == "ok"


def test_line_calibration_is_the_effective_threshold_of_that_line(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from inspect_svc.bundle import LineCalibration, rewrite_manifest
    from inspect_svc.main import create_app
    from tests.conftest import ADMIN, make_settings

    bundle: Bundle = make_test_bundle(tmp_path / "bundle", thresholds=Thresholds(pixel=0.5, image=0.8))
    calibrated = {
        "line-a": LineCalibration(
            image=0.6, target_false_alarm_rate=0.01, false_alarm_rate=0.0, normal_images=100
        )
    }
    rewrite_manifest(bundle, bundle.manifest.model_copy(update={"line_calibration": calibrated}))
    with TestClient(create_app(make_settings(tmp_path, model=bundle.root))) as client:
        assert client.get("/lines/line-a/threshold", headers=ADMIN).json()["effective"]["image"] == 0.6
        assert client.get("/lines/line-b/threshold", headers=ADMIN).json()["effective"]["image"] == 0.8
        response = client.put("/lines/line-a/threshold", json={"pixel": None, "image": 0.7}, headers=ADMIN)
        assert response.json()["effective"]["image"] == 0.7  # an operator's override still comes first


def test_the_service_scores_by_the_bundles_k_and_decides_by_the_lines_calibration(tmp_path: Path) -> None:
    import io

    from fastapi.testclient import TestClient

    from inspect_svc.bundle import ImageScore, LineCalibration, rewrite_manifest
    from inspect_svc.main import create_app
    from tests.conftest import add_camera, make_settings
    from tests.utils.onnx_models import reference_probability

    bundle = make_test_bundle(tmp_path / "bundle", thresholds=Thresholds(pixel=0.5, image=0.5))
    update = {
        "image_score": ImageScore(top_pixels=4),
        "line_calibration": {
            "line-b": LineCalibration(
                image=0.2, target_false_alarm_rate=0.01, false_alarm_rate=0.0, normal_images=50
            )
        },
    }
    rewrite_manifest(bundle, bundle.manifest.model_copy(update=update))
    frame = np.zeros((40, 48, 3), np.uint8)
    frame[..., 1] = 255  # green: far below every threshold under the test model
    frame[20, 24] = (255, 0, 0)  # one red pixel: far above them
    expected = reference_probability(frame)
    top4 = float(np.sort(expected.ravel())[-4:].mean())
    assert (
        expected.max() > 0.9 and 0.2 < top4 < 0.5
    )  # the maximum would call it defective, the top-4 mean not
    body = io.BytesIO()
    Image.fromarray(frame).save(body, format="PNG")
    with TestClient(create_app(make_settings(tmp_path, model=bundle.root))) as client:
        results = {}
        for index, line in enumerate(("line-a", "line-b")):
            key = add_camera(client, name=f"cam-{index}", line=line)
            response = client.post(
                "/inspect", content=body.getvalue(), headers={**key, "Content-Type": "image/png"}
            )
            assert response.status_code == 200, response.text
            results[line] = response.json()
    assert (
        results["line-a"]["score"] == pytest.approx(top4, abs=1e-3) and results["line-a"]["verdict"] == "ok"
    )
    assert results["line-b"]["verdict"] == "defect" and results["line-b"]["threshold"]["image"] == 0.2


def test_models_list_and_page_show_the_expected_false_alarm_rate(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from inspect_svc.bundle import rewrite_manifest
    from inspect_svc.storage import repositories
    from inspect_svc.storage.db import session_scope
    from tests.utils.reviews import add_user, dashboard_app, log_in, make_world

    bundle = make_test_bundle(tmp_path / "bundle", version="m1")
    decision = {
        "threshold": 0.7,
        "top_pixels": 16,
        "target_recall": 0.95,
        "expected_recall": 0.96,
        "expected_false_alarm_rate": 0.035,
        "normal_images": 40,
    }
    bundle = rewrite_manifest(bundle, bundle.manifest.model_copy(update={"metrics": {"decision": decision}}))
    world = make_world(tmp_path)
    add_user(world, "vera", "viewer")
    with session_scope(world.sessions) as session:
        repositories.register_model_version(session, bundle=bundle)
        listed = repositories.list_model_versions(session)  # what GET /models returns
    assert listed[0].metrics["decision"]["expected_false_alarm_rate"] == 0.035
    with TestClient(dashboard_app(world)) as client:
        log_in(client, "vera")
        page = client.get("/dashboard/models").text
    assert "3.5%" in page and "at recall 0.95" in page
