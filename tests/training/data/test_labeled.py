"""Labeled-set readers: our images/ + masks/ layout, the MVTec AD layout, masks, and few-shot picks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data.demo import generate_demo_data
from training.data.labeled import (
    UNSPECIFIED_DEFECT,
    LabeledSample,
    load_labeled_set,
    pick_per_line,
    read_mask,
    split_by_defect_type,
)
from training.errors import UserError


def _png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _grey(height: int = 20, width: int = 30, value: int = 0) -> np.ndarray:
    return np.full((height, width), value, np.uint8)


@pytest.fixture(scope="module")
def demo_labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(out, seed=2, count=0, image_size=48, labeled_count=42, lines=3, texture_archive=None)
    return out / "labeled"


def test_reads_demo_labels_with_types_and_lines(demo_labeled: Path) -> None:
    labeled = load_labeled_set(demo_labeled)
    assert labeled.layout == "folders"
    assert len(labeled.samples) == 42
    assert labeled.lines == ["brick", "grass", "gravel"]
    assert all(s.defect_types and s.mask is not None for s in labeled.defective)
    assert all(not s.defect_types and s.mask is None for s in labeled.defect_free)
    assert UNSPECIFIED_DEFECT not in labeled.defect_types
    sample = labeled.defective[0]
    image = cv2.imread(str(sample.image))
    assert read_mask(sample.mask, image.shape).any()


def test_demo_output_folder_points_to_its_labeled_subfolder(demo_labeled: Path) -> None:
    with pytest.raises(UserError, match="pass that folder"):
        load_labeled_set(demo_labeled.parent)


def test_folders_layout_without_labels_file(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png", _grey())
    _png(tmp_path / "images" / "sub" / "b.jpg", _grey())
    _png(tmp_path / "masks" / "a.png", _grey(value=255))
    labeled = load_labeled_set(tmp_path)
    by_stem = {s.stem: s for s in labeled.samples}
    assert set(by_stem) == {"a", "sub/b"}
    assert by_stem["a"].defect_types == (UNSPECIFIED_DEFECT,)
    assert by_stem["sub/b"].mask is None and by_stem["sub/b"].line is None


def test_folders_layout_with_no_masks_folder_is_all_defect_free(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png", _grey())
    assert load_labeled_set(tmp_path).defect_free[0].stem == "a"


def _mvtec_category(root: Path) -> Path:
    _png(root / "train" / "good" / "000.png", _grey())
    _png(root / "test" / "good" / "000.png", _grey())
    _png(root / "test" / "crack" / "000.png", _grey())
    _png(root / "ground_truth" / "crack" / "000_mask.png", _grey(value=255))
    return root


def test_mvtec_category(tmp_path: Path) -> None:
    labeled = load_labeled_set(_mvtec_category(tmp_path / "bottle"))
    assert labeled.layout == "mvtec"
    assert len(labeled.samples) == 3
    (defective,) = labeled.defective
    assert defective.defect_types == ("crack",) and defective.split == "test" and defective.line == "bottle"
    assert {s.split for s in labeled.defect_free} == {"train", "test"}


def test_mvtec_root_with_categories_reads_each_as_a_line(tmp_path: Path) -> None:
    _mvtec_category(tmp_path / "bottle")
    _mvtec_category(tmp_path / "screw")
    labeled = load_labeled_set(tmp_path)
    assert labeled.lines == ["bottle", "screw"]
    assert len({s.stem for s in labeled.samples}) == 6


def test_mvtec_defect_without_mask_is_an_error(tmp_path: Path) -> None:
    root = _mvtec_category(tmp_path / "bottle")
    (root / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(UserError, match="mask"):
        load_labeled_set(root)


@pytest.mark.parametrize(
    "case", ["missing", "no_layout", "no_images", "orphan_mask", "jpeg_mask", "bad_labels"]
)
def test_unusable_folders_are_user_errors(case: str, tmp_path: Path) -> None:
    root = tmp_path / "set"
    if case != "missing":
        root.mkdir()
    if case == "no_layout":
        _png(root / "loose.png", _grey())
    if case == "no_images":
        (root / "images").mkdir()
    if case in ("orphan_mask", "jpeg_mask", "bad_labels"):
        _png(root / "images" / "a.png", _grey())
    if case == "orphan_mask":
        _png(root / "masks" / "b.png", _grey())
    if case == "jpeg_mask":
        _png(root / "masks" / "a.jpg", _grey())
    if case == "bad_labels":
        (root / "defects.json").write_text("{not json")
    with pytest.raises(UserError):
        load_labeled_set(root)


def test_read_mask_checks_size_and_accepts_colour(tmp_path: Path) -> None:
    grey = _png(tmp_path / "grey.png", _grey(value=0))
    with pytest.raises(UserError, match="30x20 px but its image is 31x20"):
        read_mask(grey, (20, 31, 3))
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[5, 7, 2] = 200
    mask = read_mask(_png(tmp_path / "colour.png", colour), (20, 30))
    assert mask.dtype == bool and mask.sum() == 1 and mask[5, 7]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="cannot be read"):
        read_mask(tmp_path / "broken.png", (20, 30))


def _sample(stem: str, line: str | None, types: tuple[str, ...]) -> LabeledSample:
    return LabeledSample(
        stem=stem,
        image=Path(f"{stem}.png"),
        mask=Path(f"m/{stem}.png") if types else None,
        defect_types=types,
        line=line,
    )


def test_split_by_defect_type_keeps_held_out_types_out_of_the_seen_side() -> None:
    samples = [_sample("a", "x", ("scratch",)), _sample("b", "x", ("scratch", "burn")), _sample("c", "x", ())]
    seen, held_out = split_by_defect_type(samples, held_out={"burn"})
    assert [s.stem for s in seen] == ["a"] and [s.stem for s in held_out] == ["b"]


def test_pick_per_line_is_deterministic_nested_and_per_line() -> None:
    samples = [_sample(f"{line}{i:02d}", line, ("pits",)) for line in "pq" for i in range(30)]
    samples.append(_sample("good", "p", ()))
    five, twenty = pick_per_line(samples, 5, seed=0), pick_per_line(samples, 20, seed=0)
    assert five == pick_per_line(list(reversed(samples)), 5, seed=0)
    assert [s for s in twenty if s.line == "p"][:5] == [s for s in five if s.line == "p"]
    assert sum(s.line == "q" for s in twenty) == 20 and all(s.defective for s in twenty)
    assert pick_per_line(samples, 5, seed=1) != five
    with pytest.raises(UserError):
        pick_per_line(samples, 0, seed=0)


def test_several_labeled_folders_read_as_one_set(tmp_path: Path) -> None:
    from training.data.labeled import load_labeled_sets

    first = _write_folder_set(tmp_path / "first", stems=("a1", "a2"), defective=("a1",))
    second = _write_folder_set(tmp_path / "second", stems=("b1",), defective=("b1",))
    merged = load_labeled_sets([first, second])
    assert [s.stem for s in merged.samples] == ["a1", "a2", "b1"]
    assert len(merged.defective) == 2


def test_the_same_image_in_two_folders_is_refused(tmp_path: Path) -> None:
    from training.data.labeled import load_labeled_sets

    first = _write_folder_set(tmp_path / "first", stems=("a1",), defective=())
    second = _write_folder_set(tmp_path / "second", stems=("a1",), defective=())
    with pytest.raises(UserError, match="'a1' is in both"):
        load_labeled_sets([first, second])


def _write_folder_set(root: Path, *, stems: tuple[str, ...], defective: tuple[str, ...]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in stems:
        image = np.full((16, 16, 3), 120, np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
        if stem in defective:
            mask = np.zeros((16, 16), np.uint8)
            mask[4:8, 4:8] = 255
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root
