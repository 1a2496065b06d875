"""The labeled layout as training reads it: what the contract's writer writes, the reader gets back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspect_svc.labeled_layout import DefectsFile, SampleLabel, image_path, mask_path, write_defects_file
from training.data.labeled import UNSPECIFIED_DEFECT, load_labeled_set, read_mask
from training.errors import UserError


def _write(root: Path, stem: str, mask: np.ndarray | None) -> None:
    for relative, pixels in (
        (image_path(stem, ".png"), np.full((8, 8, 3), 100, np.uint8)),
        (mask_path(stem), mask),
    ):
        if pixels is not None:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / relative), pixels)


def test_what_the_writer_writes_the_reader_reads(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:6] = 255
    _write(tmp_path, "a", mask)
    _write(tmp_path, "b", None)
    _write(tmp_path, "c", mask)
    write_defects_file(
        tmp_path,
        DefectsFile(samples={"a": SampleLabel(line="l1", defects=["scratch"]), "b": SampleLabel(line="l2")}),
    )
    labeled = load_labeled_set(tmp_path)
    by_stem = {s.stem: s for s in labeled.samples}
    assert (by_stem["a"].defect_types, by_stem["a"].line) == (("scratch",), "l1")
    assert (by_stem["b"].defective, by_stem["b"].line) == (False, "l2")
    assert (by_stem["c"].defect_types, by_stem["c"].line) == ((UNSPECIFIED_DEFECT,), None)
    assert np.array_equal(read_mask(by_stem["a"].mask, (8, 8, 3)), mask > 0)


def test_a_defects_file_off_the_schema_is_a_user_error(tmp_path: Path) -> None:
    _write(tmp_path, "a", None)
    (tmp_path / "defects.json").write_text('{"samples": {"a": {"line": ["not", "a", "name"]}}}')
    with pytest.raises(UserError, match="not a valid defects file"):
        load_labeled_set(tmp_path)
