"""The labeled-folder layout: the second contract between training and the service, beside the bundle.

The service writes it (reviewed inspections exported as a training set); training reads it (finetune,
fit-normal, evaluate) and writes it (demo data, benchmark splits)::

    ROOT/images/<stem>.<ext>     any readable image format; subfolders allowed (they become part of the stem)
    ROOT/masks/<stem>.png        non-zero = defect; no mask file = a defect-free image
    ROOT/defects.json            optional per-image facts, `DefectsFile`

It lives in the service package, torch-free, because the service must never import training while
training may import the service. Training's reader of whole folders (stems, orphan masks, the MVTec
layout) is `training.data.labeled`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

IMAGES_DIR = "images"
MASKS_DIR = "masks"
MASK_SUFFIX = ".png"
LABELS_FILE = "defects.json"


class LabeledLayoutError(ValueError):
    """A `defects.json` that does not follow the schema."""


class SampleLabel(BaseModel):
    """What is known of one image beyond its mask; every field optional."""

    model_config = ConfigDict(extra="allow")

    line: str | None = None  # the production line, for per-line reports and calibration
    texture: str | None = None  # where the surface came from (demo data)
    defects: list[str] | None = None  # the defect types its mask shows


class DefectsFile(BaseModel):
    """`defects.json`: per-stem labels under "samples"; any other key is a fact about the whole set that
    its writer chose to record (demo data: seed, image size, lines), kept as given and read by nobody."""

    model_config = ConfigDict(extra="allow")

    samples: dict[str, SampleLabel]


def image_path(stem: str, suffix: str) -> str:
    """Where an image goes, relative to the folder's root (`suffix` with its dot, e.g. ".png")."""
    return f"{IMAGES_DIR}/{stem}{suffix}"


def mask_path(stem: str) -> str:
    """Where an image's mask goes, relative to the folder's root."""
    return f"{MASKS_DIR}/{stem}{MASK_SUFFIX}"


def format_defects_file(labels: DefectsFile) -> str:
    """The text of `defects.json`: the set's facts in the order given, then the samples; unset fields left out."""
    content = labels.model_dump(exclude_none=True)
    samples = content.pop("samples")
    return json.dumps({**content, "samples": samples}, indent=1) + "\n"


def write_defects_file(root: Path, labels: DefectsFile) -> Path:
    """Write `root/defects.json` (creating `root`); returns its path."""
    path = root / LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_defects_file(labels))
    return path


def parse_defects_file(text: str | bytes) -> DefectsFile:
    """Read the text of a `defects.json`.

    Raises:
        LabeledLayoutError: not JSON, or not the schema.
    """
    try:
        return DefectsFile.model_validate_json(text)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the file"
        raise LabeledLayoutError(f"{where}: {problem['msg']}") from None


def read_defects_file(root: Path) -> DefectsFile:
    """The `defects.json` of a labeled folder; an empty one when the folder has none.

    Raises:
        LabeledLayoutError: the file is not JSON or not the schema.
    """
    path = root / LABELS_FILE
    return parse_defects_file(path.read_bytes()) if path.is_file() else DefectsFile(samples={})
