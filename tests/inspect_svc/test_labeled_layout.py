from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspect_svc.labeled_layout import (
    LABELS_FILE,
    DefectsFile,
    LabeledLayoutError,
    SampleLabel,
    format_defects_file,
    image_path,
    mask_path,
    parse_defects_file,
    read_defects_file,
    write_defects_file,
)


def test_defects_file_round_trips_with_the_sets_facts_first(tmp_path: Path) -> None:
    labels = DefectsFile(
        seed=3,
        lines={"brick": "skimage:brick"},
        samples={
            "a": SampleLabel(line="brick", texture="skimage:brick", defects=["scratch"]),
            "b": SampleLabel(line="brick", defects=[]),
        },
    )
    path = write_defects_file(tmp_path / "set", labels)
    assert path == tmp_path / "set" / LABELS_FILE
    assert list(json.loads(path.read_text())) == ["seed", "lines", "samples"]
    again = read_defects_file(tmp_path / "set")
    assert again.samples == labels.samples
    assert format_defects_file(again) == path.read_text()


def test_unset_fields_are_left_out() -> None:
    text = format_defects_file(DefectsFile(samples={"x": SampleLabel(line="l1")}))
    assert json.loads(text) == {"samples": {"x": {"line": "l1"}}}


def test_a_folder_without_the_file_has_no_labels(tmp_path: Path) -> None:
    assert read_defects_file(tmp_path).samples == {}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"samples": []}', "samples"),
        ('{"other": 1}', "samples"),
        ('{"samples": {"a": {"defects": "scratch"}}}', "samples.a.defects"),
        ("not json", "the file"),
    ],
)
def test_a_file_off_the_schema_says_where(text: str, where: str) -> None:
    with pytest.raises(LabeledLayoutError, match=f"^{where}"):
        parse_defects_file(text)


def test_paths_follow_the_layout() -> None:
    assert image_path("line1/0001", ".jpg") == "images/line1/0001.jpg"
    assert mask_path("line1/0001") == "masks/line1/0001.png"
