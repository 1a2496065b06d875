"""Demo data: determinism, exact masks, layout, contact sheet, and the `demo-data` verb."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from training.cli import demo as demo_cli
from training.data.defects import DEFECT_FAMILIES
from training.data.demo import CONTACT_SHEET, generate_demo_data, plan_labeled_set, synthesize_sample
from training.data.textures import UFOAI_TEXTURE_ARCHIVE, load_archive_textures, load_skimage_textures
from training.errors import UserError

SMALL = dict(count=8, image_size=64, labeled_count=24, lines=4)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(out, seed=7, **SMALL)
    return out


@pytest.fixture(scope="module")
def textures() -> list:
    return load_skimage_textures() + load_archive_textures(UFOAI_TEXTURE_ARCHIVE, limit=2)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_files_and_another_seed_does_not(demo_dir: Path, tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "again", seed=7, **SMALL)
    generate_demo_data(tmp_path / "other", seed=8, **SMALL)
    first, again, other = (
        _file_bytes(demo_dir),
        _file_bytes(tmp_path / "again"),
        _file_bytes(tmp_path / "other"),
    )
    assert first == again
    shared = set(first) & set(other)
    assert any(first[name] != other[name] for name in shared if name.endswith(".png"))


@pytest.mark.parametrize("family", sorted(DEFECT_FAMILIES))
def test_mask_is_exactly_the_set_of_changed_pixels(family: str, textures: list) -> None:
    for index in range(6):
        rng = np.random.default_rng([11, index])
        size = 64 if index % 2 else 160
        sample = synthesize_sample(
            textures[index % len(textures)], (family,), size=size, rng=rng, foreign=textures
        )
        assert sample.mask.any()
        np.testing.assert_array_equal(sample.image[~sample.mask], sample.clean[~sample.mask])
        change = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max(axis=-1)[sample.mask]
        # The mask holds no invisible sliver: (nearly) every masked pixel visibly changed.
        assert (change >= 3).mean() > 0.8, f"{family}: too many masked pixels unchanged"


def test_two_defects_on_one_image_share_one_exact_mask(textures: list) -> None:
    rng = np.random.default_rng(3)
    sample = synthesize_sample(textures[0], ("scratch", "burn"), size=96, rng=rng, foreign=textures)
    np.testing.assert_array_equal(sample.image[~sample.mask], sample.clean[~sample.mask])


def test_defect_free_sample_is_the_clean_crop(textures: list) -> None:
    sample = synthesize_sample(textures[1], (), size=64, rng=np.random.default_rng(0), foreign=textures)
    assert not sample.mask.any()
    np.testing.assert_array_equal(sample.image, sample.clean)


def test_layout_labels_and_masks(demo_dir: Path) -> None:
    labels = json.loads((demo_dir / "labeled" / "defects.json").read_text())
    samples = labels["samples"]
    assert len(samples) == SMALL["labeled_count"]
    assert set(labels["lines"]) == {entry["line"] for entry in samples.values()}
    assert len(labels["lines"]) == min(SMALL["lines"], 3 + UFOAI_TEXTURE_ARCHIVE.is_file())
    assert {f for entry in samples.values() for f in entry["defects"]} == set(DEFECT_FAMILIES)
    assert any(not entry["defects"] for entry in samples.values())
    for stem, entry in samples.items():
        image = cv2.imread(str(demo_dir / "labeled" / "images" / f"{stem}.png"))
        assert image.shape == (64, 64, 3)
        mask_path = demo_dir / "labeled" / "masks" / f"{stem}.png"
        assert mask_path.is_file() == bool(entry["defects"])
        if entry["defects"]:
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    unlabeled = sorted((demo_dir / "unlabeled").rglob("*.png"))
    assert len(unlabeled) == SMALL["count"]
    assert {p.parent.name for p in unlabeled} <= set(labels["lines"])


def test_contact_sheet_is_written(demo_dir: Path) -> None:
    sheet = cv2.imread(str(demo_dir / CONTACT_SHEET))
    assert sheet is not None and sheet.shape[1] == 6 * 192


def test_plan_balances_lines_and_defect_free_share() -> None:
    plan = plan_labeled_set(["a", "b", "c"], labeled_count=60, defect_free_fraction=0.25, seed=1)
    for line in "abc":
        entries = [e for e in plan if e.line == line]
        assert len(entries) == 20
        assert sum(1 for e in entries if not e.families) == 5
    assert len({e.stem for e in plan}) == 60


def test_without_the_archive_only_scikit_image_textures_are_used(tmp_path: Path) -> None:
    summary = generate_demo_data(
        tmp_path / "out", seed=1, count=3, image_size=48, labeled_count=9, texture_archive=None
    )
    assert not summary.archive_found
    assert all(source.startswith("scikit-image:") for source in summary.lines.values())


def test_rerun_replaces_own_output_but_refuses_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate_demo_data(out, seed=1, count=6, image_size=48, labeled_count=9, lines=2)
    generate_demo_data(out, seed=1, count=2, image_size=48, labeled_count=9, lines=2)
    assert len(list((out / "unlabeled").rglob("*.png"))) == 2
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(UserError, match="not empty"):
        generate_demo_data(foreign, count=2, image_size=48, labeled_count=0)


@pytest.mark.parametrize(
    "arguments",
    [
        dict(count=-1),
        dict(image_size=8),
        dict(labeled_count=-3),
        dict(lines=0),
        dict(count=0, labeled_count=0),
    ],
)
def test_bad_numbers_are_user_errors(arguments: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError):
        generate_demo_data(tmp_path / "out", **{**SMALL, **arguments})


def _app() -> typer.Typer:
    app = typer.Typer()
    demo_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # a second verb keeps `demo-data` a named subcommand
    return app


def test_cli_writes_demo_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "demo-data",
            "--out",
            str(tmp_path / "d"),
            "--count",
            "3",
            "--image-size",
            "48",
            "--labeled-count",
            "8",
            "--lines",
            "2",
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "labeled:   8 images" in result.output
    assert (tmp_path / "d" / "labeled" / "defects.json").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "{tmp}/missing/parent/d"], "does not exist"),
        (["--out", "{tmp}/d", "--count", "-2"], "--count"),
    ],
)
def test_cli_reports_bad_arguments_in_one_line(extra: list[str], message: str, tmp_path: Path) -> None:
    args = ["demo-data", *[a.format(tmp=tmp_path) for a in extra]]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
