"""Which images a model was made from, so that evaluating on them can be flagged.

A run folder (and the bundle exported from it) keeps `training_images.json`: a short content hash of
every image `finetune` or `fit-normal` read, validation split included, since thresholds and fusion
were fitted on it. `evaluate` hashes the images it is given and counts the ones the model has
already seen: metrics on those are optimistic. Hashes of contents, not names, so a copied or renamed
folder is still recognised.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TRAINING_IMAGES_FILE = "training_images.json"
DIGEST_CHARS = 16  # 64 bits: no accidental collision among any realistic number of images


def image_digest(path: Path) -> str:
    """A short sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:DIGEST_CHARS]


def write_training_images(folder: Path, images: Iterable[Path]) -> None:
    """Record the content hashes of `images` in `folder` (a run folder)."""
    digests = sorted({image_digest(path) for path in images})
    (folder / TRAINING_IMAGES_FILE).write_text(json.dumps({"sha256_prefix": digests}) + "\n")


def copy_training_images(run: Path, bundle: Path) -> None:
    """Carry a run's record into the bundle exported from it (nothing to carry for older runs)."""
    source = run / TRAINING_IMAGES_FILE
    if source.is_file():
        shutil.copyfile(source, bundle / TRAINING_IMAGES_FILE)


def read_training_images(folder: Path) -> frozenset[str] | None:
    """The hashes a run or bundle folder recorded; None when it recorded none (older runs)."""
    path = folder / TRAINING_IMAGES_FILE
    if not path.is_file():
        return None
    try:
        return frozenset(json.loads(path.read_text())["sha256_prefix"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Overlap:
    """How many of the evaluated images the model was made from."""

    seen: int
    evaluated: int

    def warning(self) -> str:
        """One line for the user; empty when no evaluated image was seen in training."""
        if not self.seen:
            return ""
        share = "all" if self.seen == self.evaluated else f"{self.seen} of {self.evaluated}"
        return (
            f"{share} evaluated images were used to make this model (training or validation split): "
            "these metrics are optimistic; evaluate on images it never saw"
        )


def training_overlap(trained: frozenset[str], evaluated: list[Path]) -> Overlap:
    """Count the `evaluated` images whose contents are among the `trained` hashes."""
    seen = sum(image_digest(path) in trained for path in evaluated)
    return Overlap(seen=seen, evaluated=len(evaluated))
