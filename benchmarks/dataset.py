"""Build one benchmark split on disk, deterministically from a seed: surfaces × the physical defects.

    OUT/train/images, masks, defects.json   defect-free images and a pool of labeled defective ones
    OUT/test/images, masks, defects.json    defect-free and defective images, never trained on
    OUT/calibration/images, defects.json     defect-free images per surface, never trained on: what a
                                            plant's line calibration (`train-pipeline calibrate`) reads
    OUT/benchmark-data.json                 the arguments, the surfaces and their sources

Both folders are labeled sets in the product's own layout (`training.data.labeled`), with one line per
surface, so `finetune`, `fit-normal` and `evaluate` read them as a plant's data. Every image is drawn
from a numpy Generator seeded by (seed, surface, folder, index): one seed gives the same files, and an
image does not depend on how many others are made. The data is not committed: the command rebuilds it.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.defects_physical import PHYSICAL_FAMILIES, draw_physical_defect
from inspect_svc.labeled_layout import DefectsFile, SampleLabel, write_defects_file
from training.data.demo import write_png
from training.data.textures import Texture, crop_texture
from training.errors import UserError

RECORD_FILE = "benchmark-data.json"
# Defect types no model may be trained on in the held-out-type regime: one structural, one thin.
HELD_OUT_TYPES = ("contamination", "weave_fault")
_FOLDER_STREAM = {"train": 0, "test": 1, "calibration": 2}


@dataclass(frozen=True)
class DataConfig:
    """Sizes of one split's data (per surface)."""

    image_size: int = 256
    train_normal: int = 30
    train_defective: int = 24  # the largest labels budget (20) must fit, with one of every family
    test_normal: int = 20
    test_defective: int = 20
    # A line has defect-free images by the thousand; the benchmark calibrates each surface on a few.
    calibration_normal: int = 20
    seed: int = 0


def build_split(textures: list[Texture], out: Path, config: DataConfig, split: str) -> dict:
    """Write the split's train and test folders for `textures`; returns the record also written to disk.

    Raises:
        UserError: `out` holds something other than an earlier benchmark split, or a count is negative.
    """
    counts = (config.train_normal, config.train_defective, config.test_normal, config.test_defective)
    if min(*counts, config.calibration_normal) < 0:
        raise UserError("image counts must be 0 or more")
    if not 32 <= config.image_size <= 4096:
        raise UserError(f"--image-size must be between 32 and 4096 pixels, got {config.image_size}")
    _prepare(out)
    families = list(PHYSICAL_FAMILIES)
    for folder, normal, defective in (
        ("train", config.train_normal, config.train_defective),
        ("test", config.test_normal, config.test_defective),
        ("calibration", config.calibration_normal, 0),
    ):
        labels: dict[str, SampleLabel] = {}
        for texture in textures:
            labels.update(_write_surface(out / folder, texture, folder, normal, defective, families, config))
        (out / folder / "masks").mkdir(parents=True, exist_ok=True)
        write_defects_file(out / folder, DefectsFile(samples=labels))
    record = {
        "split": split,
        **asdict(config),
        "surfaces": {t.name: t.source for t in textures},
        "defect_types": families,
        "held_out_types": list(HELD_OUT_TYPES),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def read_record(data: Path) -> dict:
    """The record of a split built by `build_split`.

    Raises:
        UserError: `data` is not such a folder.
    """
    path = data / RECORD_FILE
    if not path.is_file():
        raise UserError(f"{data} is not a benchmark split (no {RECORD_FILE}); build one with `make-data`")
    return json.loads(path.read_text())


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
        raise UserError(f"{out} is not empty and holds no benchmark split; choose a new or empty folder")
    for folder in _FOLDER_STREAM:
        shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_surface(
    folder: Path,
    texture: Texture,
    part: str,
    normal: int,
    defective: int,
    families: list[str],
    config: DataConfig,
) -> dict[str, SampleLabel]:
    """One surface's images of `folder`; families are dealt in turn, so each appears equally often."""
    labels = {}
    surface_key = zlib.crc32(texture.name.encode())
    order = np.random.default_rng([config.seed, surface_key]).permutation(len(families))
    for index in range(normal + defective):
        rng = np.random.default_rng([config.seed, surface_key, _FOLDER_STREAM[part], index])
        clean = crop_texture(texture.pixels, config.image_size, rng)
        stem = f"{texture.name}-{part}-{index:03d}"
        if index < normal:
            write_png(folder / "images" / f"{stem}.png", clean)
            labels[stem] = SampleLabel(line=texture.name)
            continue
        family = families[order[(index - normal) % len(families)]]
        image, mask = draw_physical_defect(clean, family, rng)
        write_png(folder / "images" / f"{stem}.png", image)
        write_png(folder / "masks" / f"{stem}.png", mask.astype(np.uint8) * 255)
        labels[stem] = SampleLabel(line=texture.name, defects=[family])
    return labels
