"""Reviewed inspections -> a labeled training set (`images/`, `masks/`, `defects.json`, `manifest.json`).

The one implementation of the export, used by `train-pipeline dataset-from-reviews` (a directory) and by
the dashboard's download (a zip). The latest review of an inspection decides what it becomes:

- a corrected mask (any verdict but a false alarm) is the label, whatever the model predicted;
- "confirm" without a correction: the model's own map, thresholded at the pixel threshold recorded
  with the inspection (what the operator saw and agreed with);
- "reject" (false alarm): the image becomes a defect-free example, with no mask file;
- "missed" without a correction: skipped, since nobody drew where the defect is.

Masks are 8-bit grey PNGs, 255 = defect; images are copied byte for byte.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from inspect_svc.labeled_layout import (
    IMAGES_DIR,
    LABELS_FILE,
    MASKS_DIR,
    DefectsFile,
    SampleLabel,
    format_defects_file,
    image_path,
    mask_path,
)
from inspect_svc.schemas import INVALID_IMAGE
from inspect_svc.storage.blobstore import BlobNotFound, BlobStorage, BlobStore
from inspect_svc.storage.db import Session
from inspect_svc.storage.reviewed_set import (
    ReviewedInspection,
    ReviewsUnreadable,
    latest_reviewed,
    reviews_session,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
IMAGE_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/bmp": ".bmp", "image/tiff": ".tif"}


class ExportError(ValueError):
    """The export cannot start (an output that is not empty, a database that cannot be read)."""


@dataclass(frozen=True)
class ExportedItem:
    """One inspection in the exported set; `mask` is None for a defect-free image."""

    inspection_id: str
    image: str
    mask: str | None
    mask_source: str  # corrected | predicted | none
    verdict: str
    reviewer: str | None
    reviewed_at: str
    review_id: int
    model_version: str
    camera_id: str
    line: str | None
    pixel_threshold: float


@dataclass(frozen=True)
class SkippedItem:
    inspection_id: str
    verdict: str
    reason: str


@dataclass
class Manifest:
    """What an export holds; written as `manifest.json` beside `images/` and `masks/`."""

    created_at: str
    items: list[ExportedItem] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)

    @property
    def defect_images(self) -> int:
        return sum(item.mask is not None for item in self.items)

    def to_json(self) -> str:
        body = {
            "format": MANIFEST_FORMAT,
            "created_at": self.created_at,
            "count": len(self.items),
            "defect_images": self.defect_images,
            "items": [asdict(item) for item in self.items],
            "skipped": [asdict(item) for item in self.skipped],
        }
        return json.dumps(body, indent=2) + "\n"


class DatasetSink(Protocol):
    """Where exported files go: a directory or a zip archive."""

    def write(self, relative_path: str, data: bytes) -> None: ...


class DirectorySink:
    def __init__(self, root: Path) -> None:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ExportError(f"{root} exists and is not an empty directory; choose a new output directory")
        (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        (root / MASKS_DIR).mkdir(exist_ok=True)
        self.root = root

    def write(self, relative_path: str, data: bytes) -> None:
        (self.root / relative_path).write_bytes(data)


class ZipSink:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def write(self, relative_path: str, data: bytes) -> None:
        # Images and PNG masks are already compressed: storing them saves CPU for nothing lost.
        compression = zipfile.ZIP_DEFLATED if relative_path.endswith(".json") else zipfile.ZIP_STORED
        self.archive.writestr(relative_path, data, compress_type=compression)


def thresholded_png(png: bytes, threshold: float) -> np.ndarray:
    """Pixels of an 8-bit grey PNG whose value / 255 reaches `threshold`.

    For a stored probability map this is the model's defect mask at that threshold; for a stored mask
    (0 / 255) at 0.5 it is the mask itself.
    """
    with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
        values = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return values >= threshold


def _mask_png(defect: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(defect, 255, 0).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _label_for(entry: ReviewedInspection, blobs: BlobStorage) -> tuple[bytes | None, str] | str:
    """(mask PNG or None, mask source), or the reason the inspection cannot be exported."""
    if entry.inspection_verdict == INVALID_IMAGE:
        return "a damaged frame (invalid_image), never scored: not a training image"
    if entry.mask_key is not None and entry.verdict != "reject":
        corrected = thresholded_png(blobs.read(entry.mask_key), 0.5)
        if not corrected.any():
            return "the corrected mask is empty although the verdict says there is a defect"
        return _mask_png(corrected), "corrected"
    if entry.verdict == "reject":
        return None, "none"
    if entry.verdict == "missed":
        return "missed defect without a corrected mask: nobody drew where the defect is"
    predicted = thresholded_png(blobs.read(entry.map_key), entry.pixel_threshold)
    if not predicted.any():
        return "confirmed defect, but no pixel reaches the recorded threshold: correct the mask to export it"
    return _mask_png(predicted), "predicted"


def write_reviewed_dataset(session: Session, blobs: BlobStorage, sink: DatasetSink) -> Manifest:
    """Write every reviewed inspection to `sink` in the labeled layout, then the manifest."""
    manifest = Manifest(created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for entry in latest_reviewed(session):
        try:
            label = _label_for(entry, blobs)
            image_bytes = blobs.read(entry.image_key)
        except (BlobNotFound, OSError) as error:
            label = f"a stored file is missing or unreadable: {error}"
        if isinstance(label, str):
            manifest.skipped.append(SkippedItem(entry.inspection_id, entry.verdict, label))
            continue
        mask_bytes, source = label
        image_file = image_path(entry.inspection_id, IMAGE_EXTENSIONS.get(entry.image_media_type, ".png"))
        mask_file = mask_path(entry.inspection_id) if mask_bytes is not None else None
        sink.write(image_file, image_bytes)
        if mask_file is not None and mask_bytes is not None:
            sink.write(mask_file, mask_bytes)
        manifest.items.append(
            ExportedItem(
                inspection_id=entry.inspection_id,
                image=image_file,
                mask=mask_file,
                mask_source=source,
                verdict=entry.verdict,
                reviewer=entry.reviewer,
                reviewed_at=entry.reviewed_at.isoformat(timespec="seconds"),
                review_id=entry.review_id,
                model_version=entry.model_version,
                camera_id=entry.camera_id,
                line=entry.line,
                pixel_threshold=entry.pixel_threshold,
            )
        )
    # The line of each image, so that evaluation can report per line.
    labels = DefectsFile(
        samples={item.inspection_id: SampleLabel(line=item.line) for item in manifest.items if item.line}
    )
    sink.write(LABELS_FILE, format_defects_file(labels).encode())
    sink.write(MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def export_to_directory(database_url: str, blob_root: Path, out: Path) -> Manifest:
    """Export the reviewed set of the database at `database_url` into the new directory `out`.

    Raises:
        ExportError: `out` is not empty, or the database or blob store cannot be read.
    """
    if not blob_root.is_dir():
        raise ExportError(f"blob store {blob_root} does not exist; pass the service's data directory")
    try:
        with reviews_session(database_url) as session:
            return write_reviewed_dataset(session, BlobStore(blob_root), DirectorySink(out))
    except ReviewsUnreadable as error:
        raise ExportError(str(error)) from None


def export_to_zip(session: Session, blobs: BlobStorage, target: io.BufferedIOBase | Path) -> Manifest:
    """Export the reviewed set as a zip archive written to `target` (a path or a binary file)."""
    with zipfile.ZipFile(target, "w") as archive:
        return write_reviewed_dataset(session, blobs, ZipSink(archive))
