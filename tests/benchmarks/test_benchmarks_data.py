"""The benchmark's physical defect generator, its surface pools and its split builder."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.dataset import HELD_OUT_TYPES, DataConfig, build_split
from benchmarks.defects_physical import PHYSICAL_FAMILIES, dominant_period, draw_physical_defect
from benchmarks.scoring import score_surface
from benchmarks.surfaces import SPLIT_A, SPLIT_B, split_members
from training.data.defects import DEFECT_FAMILIES
from training.data.labeled import load_labeled_set
from training.data.textures import SKIMAGE_TEXTURES, UFOAI_MEMBERS, Texture
from training.errors import UserError
from training.metrics import SCORE_DECIMALS, average_precision

REPO = Path(__file__).resolve().parents[2]


def tiny_textures(count: int = 2, size: int = 96) -> list[Texture]:
    """Small textures made here (one periodic, one noisy), so the tests need no texture package."""
    rng = np.random.default_rng(5)
    ys, xs = np.mgrid[0:size, 0:size]
    woven = (127 + 60 * np.sin(xs * 2 * np.pi / 8) * np.sin(ys * 2 * np.pi / 8)).astype(np.uint8)
    noisy = np.clip(rng.normal(120, 25, (size, size)), 0, 255).astype(np.uint8)
    planes = [woven, noisy][:count]
    return [
        Texture(name=f"surface{i}", source="test", pixels=np.repeat(p[..., None], 3, 2))
        for i, p in enumerate(planes)
    ]


def clean_image(size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(128, 20, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("family", sorted(PHYSICAL_FAMILIES))
def test_every_family_changes_exactly_its_mask(family: str) -> None:
    clean = clean_image()
    image, mask = draw_physical_defect(clean, family, np.random.default_rng(3))
    assert mask.dtype == bool and mask.any()
    assert np.array_equal(image[~mask], clean[~mask])  # nothing outside the mask moved
    assert np.abs(image.astype(int) - clean.astype(int))[mask].max() > 0


def test_a_seed_gives_the_same_defect() -> None:
    first = draw_physical_defect(clean_image(), "oil_film", np.random.default_rng(11))
    second = draw_physical_defect(clean_image(), "oil_film", np.random.default_rng(11))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_the_period_of_a_woven_surface_is_found() -> None:
    xs = np.arange(128)
    stripes = np.repeat((127 + 80 * np.sin(xs * 2 * np.pi / 10))[None, :, None], 128, 0).repeat(3, 2)
    assert dominant_period(stripes.astype(np.float32), axis=1) == pytest.approx(10, abs=1)


def test_the_benchmark_generator_is_not_the_training_one() -> None:
    assert not set(PHYSICAL_FAMILIES) & set(DEFECT_FAMILIES)
    assert set(HELD_OUT_TYPES) <= set(PHYSICAL_FAMILIES)


def test_no_training_module_imports_the_benchmark() -> None:
    for path in (REPO / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "benchmarks" for name in names), path


def test_split_pools_are_disjoint_and_apart_from_the_demo_pool() -> None:
    assert not set(SPLIT_A) & set(SPLIT_B)
    for split in (SPLIT_A, SPLIT_B):
        assert not set(split) & set(UFOAI_MEMBERS)
        assert not {Path(m).stem for m in split} & set(SKIMAGE_TEXTURES)
        assert len({Path(m).stem for m in split}) == len(split)  # stems name the lines: no repeats


def test_an_unknown_split_is_a_user_error() -> None:
    with pytest.raises(UserError, match="a or b"):
        split_members("c")


def test_build_split_writes_labeled_folders_deterministically(tmp_path: Path) -> None:
    config = DataConfig(
        image_size=48, train_normal=2, train_defective=7, test_normal=1, test_defective=6, seed=4
    )
    build_split(tiny_textures(), tmp_path / "one", config, "a")
    build_split(tiny_textures(), tmp_path / "two", config, "a")
    train = load_labeled_set(tmp_path / "one" / "train")
    assert len(train.samples) == 2 * 9 and len(train.defective) == 2 * 7
    assert train.lines == ["surface0", "surface1"]
    assert set(train.defect_types) == set(PHYSICAL_FAMILIES)  # families dealt in turn: all present
    for path in sorted((tmp_path / "one").rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()
    record = json.loads((tmp_path / "one" / "benchmark-data.json").read_text())
    assert record["split"] == "a" and record["seed"] == 4
    calibration = load_labeled_set(tmp_path / "one" / "calibration")
    assert len(calibration.samples) == 2 * config.calibration_normal and not calibration.defective
    assert calibration.lines == ["surface0", "surface1"]


def test_calibration_images_leave_the_train_and_test_images_as_they_were(tmp_path: Path) -> None:
    sizes = {"image_size": 48, "train_normal": 2, "train_defective": 2, "test_normal": 1, "test_defective": 2}
    build_split(tiny_textures(), tmp_path / "with", DataConfig(**sizes, calibration_normal=3), "a")
    build_split(tiny_textures(), tmp_path / "without", DataConfig(**sizes, calibration_normal=0), "a")
    for folder in ("train", "test"):
        for path in sorted((tmp_path / "without" / folder).rglob("*.png")):
            relative = path.relative_to(tmp_path / "without")
            assert path.read_bytes() == (tmp_path / "with" / relative).read_bytes()


def test_build_split_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        build_split(tiny_textures(), tmp_path, DataConfig(image_size=48), "a")
    assert (tmp_path / "mine.txt").is_file()


def test_average_precision_matches_a_hand_count() -> None:
    # Ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # A tie between a positive and a negative is one step of precision 1/2.
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)


def step_sum_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Σ (R_k − R_(k−1)) P_k over the distinct scores, a tie crossing as one step: the definition, spelled out."""
    order = np.argsort(-scores, kind="stable")
    ranked, positive = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    true_pos = np.cumsum(positive)[ends]
    return float(np.sum(np.diff(np.r_[0, true_pos]) / positive.sum() * true_pos / (ends + 1)))


def test_the_benchmarks_pixel_ap_is_the_products_on_a_random_map() -> None:
    rng = np.random.default_rng(3)
    masks = [np.zeros((48, 48), bool) for _ in range(3)] + [np.zeros((48, 48), bool)]
    for mask in masks[:3]:
        top, left = rng.integers(0, 40, 2)
        mask[top : top + 8, left : left + 8] = True
    maps = [np.clip(rng.random((48, 48)) + 0.4 * m, 0, 1).astype(np.float32) for m in masks]
    scored = score_surface(maps, masks, image_threshold=0.5)
    scores = np.round(np.concatenate([m.ravel() for m in maps]).astype(np.float64), SCORE_DECIMALS)
    labels = np.concatenate([m.ravel() for m in masks])
    assert scored["pixel_ap"] == pytest.approx(step_sum_average_precision(scores, labels), abs=1e-12)
    assert 0.0 < scored["pixel_ap"] < 1.0
    # A surface with no defective test image has no pixel AP, as before.
    assert np.isnan(score_surface(maps[3:], masks[3:], image_threshold=0.5)["pixel_ap"])
