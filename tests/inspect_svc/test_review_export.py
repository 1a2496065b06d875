"""Reviewed inspections -> labeled layout: which label wins, what is skipped, CLI and zip download agree."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from inspect_svc.review_export import thresholded_png
from inspect_svc.schemas import ReviewCreate
from inspect_svc.storage import repositories
from inspect_svc.storage.db import session_scope
from tests.utils.reviews import PASSWORD, add_inspection, add_user, dashboard_app, make_world, mask_png
from training.cli import app as train_pipeline
from training.data.labeled import load_labeled_set
from training.errors import UserError
from training.reviews import export_reviewed_dataset


def review(world, inspection_id: str, verdict: str, reviewer_id: int, mask: bytes | None = None) -> None:
    mask_key = world.blobs.put(mask, suffix=".png") if mask is not None else None
    with session_scope(world.sessions) as session:
        repositories.add_review(
            session,
            review=ReviewCreate(
                inspection_id=inspection_id, reviewer_id=reviewer_id, verdict=verdict, mask_key=mask_key
            ),
        )


@pytest.fixture
def reviewed(tmp_path):
    """A database where every export rule has an example; returns (world, {case: inspection id})."""
    world = make_world(tmp_path / "service")
    rita = add_user(world, "rita", "reviewer")
    cases = {
        "confirmed": add_inspection(world, score=0.9, minutes=1, line="line-a"),
        "corrected": add_inspection(world, score=0.8, minutes=2, line="line-b"),
        "false_alarm": add_inspection(world, score=0.7, minutes=3),
        "missed_no_mask": add_inspection(world, score=0.2, minutes=4),
        "missed_drawn": add_inspection(world, score=0.1, minutes=5),
        "changed_mind": add_inspection(world, score=0.95, minutes=6),
        "unreviewed": add_inspection(world, score=0.99, minutes=7),
    }
    review(world, cases["confirmed"].id, "confirm", rita)
    review(world, cases["corrected"].id, "confirm", rita, mask=mask_png(64, 48, (5, 6, 7, 8)))
    review(world, cases["false_alarm"].id, "reject", rita)
    review(world, cases["missed_no_mask"].id, "missed", rita)
    review(world, cases["missed_drawn"].id, "missed", rita, mask=mask_png(64, 48, (40, 30, 3, 3)))
    review(world, cases["changed_mind"].id, "confirm", rita)
    review(world, cases["changed_mind"].id, "reject", rita)  # the latest review counts
    return world, {name: record for name, record in cases.items()}


def read_mask(path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def test_export_applies_each_review_rule(reviewed, tmp_path):
    world, cases = reviewed
    out = tmp_path / "set"
    manifest = export_reviewed_dataset(world.database_url, out, blob_root=world.blobs.root)

    exported = {item.inspection_id: item for item in manifest.items}
    assert set(exported) == {
        cases[name].id for name in ("confirmed", "corrected", "false_alarm", "missed_drawn", "changed_mind")
    }
    assert [item.inspection_id for item in manifest.skipped] == [cases["missed_no_mask"].id]
    assert "nobody drew" in manifest.skipped[0].reason

    corrected = read_mask(out / "masks" / f"{cases['corrected'].id}.png")
    expected = np.zeros((48, 64), dtype=bool)
    expected[6:14, 5:12] = True
    assert np.array_equal(corrected, expected)
    assert exported[cases["corrected"].id].mask_source == "corrected"

    confirmed = cases["confirmed"]
    predicted = read_mask(out / "masks" / f"{confirmed.id}.png")
    assert np.array_equal(
        predicted, thresholded_png(world.blobs.read(confirmed.map_key), confirmed.threshold.pixel)
    )
    assert predicted.any() and exported[confirmed.id].mask_source == "predicted"

    for name in ("false_alarm", "changed_mind"):
        assert not (out / "masks" / f"{cases[name].id}.png").exists()
        assert (out / "images" / f"{cases[name].id}.png").read_bytes() == world.blobs.read(
            cases[name].image_key
        )
    assert exported[cases["changed_mind"].id].verdict == "reject"


def test_manifest_names_reviewer_model_and_verdict(reviewed, tmp_path):
    world, cases = reviewed
    export_reviewed_dataset(world.database_url, tmp_path / "set", blob_root=world.blobs.root)
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["defect_images"] == 3
    item = next(entry for entry in manifest["items"] if entry["inspection_id"] == cases["corrected"].id)
    assert (item["reviewer"], item["model_version"], item["verdict"]) == ("rita", "m1", "confirm")


def test_training_reads_the_export_as_a_labeled_set(reviewed, tmp_path):
    world, _ = reviewed
    export_reviewed_dataset(world.database_url, tmp_path / "set", blob_root=world.blobs.root)
    labeled = load_labeled_set(tmp_path / "set")
    assert len(labeled.defective) == 3 and len(labeled.defect_free) == 2
    assert "line-b" in labeled.lines


def test_export_refuses_a_non_empty_output_and_a_missing_database(reviewed, tmp_path):
    world, _ = reviewed
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not an empty directory"):
        export_reviewed_dataset(world.database_url, tmp_path / "busy", blob_root=world.blobs.root)
    with pytest.raises(UserError, match="does not exist"):
        export_reviewed_dataset(
            f"sqlite:///{tmp_path / 'nope.db'}", tmp_path / "x", blob_root=world.blobs.root
        )
    with pytest.raises(UserError, match="--db"):
        export_reviewed_dataset("mysql://db/x", tmp_path / "y", blob_root=world.blobs.root)


def test_cli_exports_and_reports_bad_input_in_one_line(reviewed, tmp_path):
    world, _ = reviewed
    runner = CliRunner()
    data_dir = world.settings.data_dir
    ok = runner.invoke(
        train_pipeline,
        [
            "dataset-from-reviews",
            "--db",
            world.database_url,
            "--out",
            str(tmp_path / "cli"),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "wrote 5 images (3 with a defect mask)" in ok.output
    again = runner.invoke(
        train_pipeline,
        [
            "dataset-from-reviews",
            "--db",
            world.database_url,
            "--out",
            str(tmp_path / "cli"),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert again.exit_code == 2
    assert again.output.strip().count("\n") == 0 and "not an empty directory" in again.output


def test_dashboard_download_is_the_same_export(reviewed, tmp_path):
    world, _ = reviewed
    export_reviewed_dataset(world.database_url, tmp_path / "set", blob_root=world.blobs.root)
    with TestClient(dashboard_app(world)) as client:
        assert client.get("/dashboard/export.zip", follow_redirects=False).status_code == 303
        form = client.get("/dashboard/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        client.post("/dashboard/login", data={"username": "rita", "password": PASSWORD, "csrf_token": token})
        reply = client.get("/dashboard/export.zip")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    on_disk = {
        str(path.relative_to(tmp_path / "set")): path.read_bytes()
        for path in (tmp_path / "set").rglob("*")
        if path.is_file() and path.name != "manifest.json"
    }
    assert {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"} == on_disk
    assert json.loads(archive.read("manifest.json"))["count"] == 5


def test_bad_service_settings_are_a_one_line_cli_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    monkeypatch.setenv("INSPECT_PORT", "not-a-port")
    result = CliRunner().invoke(
        app,
        ["dataset-from-reviews", "--db", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: service settings: port: Input should be a valid integer, unable to parse string as an integer"
    )
