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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from inspect_svc.schemas import INVALID_IMAGE
from inspect_svc.storage.blobstore import BlobNotFound, BlobStorage, BlobStore
from inspect_svc.storage.db import make_engine, make_session_factory
from inspect_svc.storage.models import InspectionDB, ReviewDB, UserDB

MANIFEST_NAME = "manifest.json"
# The labeled layout's optional per-image facts (read by training's labeled-set reader): the line of
# each image, so evaluation can report per line.
LABELS_NAME = "defects.json"
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
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
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


@dataclass(frozen=True)
class _Reviewed:
    inspection: InspectionDB
    review: ReviewDB
    reviewer: str | None


def _latest_reviews(session: Session) -> Iterator[_Reviewed]:
    """Each reviewed inspection with its latest review, oldest inspection first."""
    latest = select(func.max(ReviewDB.id).label("review_id")).group_by(ReviewDB.inspection_id).subquery()
    statement = (
        select(InspectionDB, ReviewDB, UserDB.username)
        .join(ReviewDB, ReviewDB.inspection_id == InspectionDB.id)
        .join(latest, latest.c.review_id == ReviewDB.id)
        .outerjoin(UserDB, UserDB.id == ReviewDB.reviewer_id)
        .order_by(InspectionDB.created_at, InspectionDB.id)
        .execution_options(yield_per=200)
    )
    for inspection, review, username in session.execute(statement):
        yield _Reviewed(inspection, review, username)


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


def _label_for(entry: _Reviewed, blobs: BlobStorage) -> tuple[bytes | None, str] | str:
    """(mask PNG or None, mask source), or the reason the inspection cannot be exported."""
    review, inspection = entry.review, entry.inspection
    if inspection.verdict == INVALID_IMAGE:
        return "a damaged frame (invalid_image), never scored: not a training image"
    if review.mask_key is not None and review.verdict != "reject":
        corrected = thresholded_png(blobs.read(review.mask_key), 0.5)
        if not corrected.any():
            return "the corrected mask is empty although the verdict says there is a defect"
        return _mask_png(corrected), "corrected"
    if review.verdict == "reject":
        return None, "none"
    if review.verdict == "missed":
        return "missed defect without a corrected mask: nobody drew where the defect is"
    predicted = thresholded_png(blobs.read(inspection.map_key), inspection.pixel_threshold)
    if not predicted.any():
        return "confirmed defect, but no pixel reaches the recorded threshold: correct the mask to export it"
    return _mask_png(predicted), "predicted"


def write_reviewed_dataset(session: Session, blobs: BlobStorage, sink: DatasetSink) -> Manifest:
    """Write every reviewed inspection to `sink` in the labeled layout, then the manifest."""
    manifest = Manifest(created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for entry in _latest_reviews(session):
        inspection, review = entry.inspection, entry.review
        try:
            label = _label_for(entry, blobs)
            image_bytes = blobs.read(inspection.image_key)
        except (BlobNotFound, OSError) as error:
            label = f"a stored file is missing or unreadable: {error}"
        if isinstance(label, str):
            manifest.skipped.append(SkippedItem(inspection.id, review.verdict, label))
            continue
        mask_bytes, source = label
        image_path = f"images/{inspection.id}{IMAGE_EXTENSIONS.get(inspection.image_media_type, '.png')}"
        mask_path = f"masks/{inspection.id}.png" if mask_bytes is not None else None
        sink.write(image_path, image_bytes)
        if mask_path is not None and mask_bytes is not None:
            sink.write(mask_path, mask_bytes)
        manifest.items.append(
            ExportedItem(
                inspection_id=inspection.id,
                image=image_path,
                mask=mask_path,
                mask_source=source,
                verdict=review.verdict,
                reviewer=entry.reviewer,
                reviewed_at=review.created_at.isoformat(timespec="seconds"),
                review_id=review.id,
                model_version=inspection.model_version,
                camera_id=inspection.camera_id,
                line=inspection.line,
                pixel_threshold=inspection.pixel_threshold,
            )
        )
    labels = {"samples": {item.inspection_id: {"line": item.line} for item in manifest.items if item.line}}
    sink.write(LABELS_NAME, (json.dumps(labels, indent=1) + "\n").encode())
    sink.write(MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def export_to_directory(database_url: str, blob_root: Path, out: Path) -> Manifest:
    """Export the reviewed set of the database at `database_url` into the new directory `out`.

    Raises:
        ExportError: `out` is not empty, or the database or blob store cannot be read.
    """
    if not blob_root.is_dir():
        raise ExportError(f"blob store {blob_root} does not exist; pass the service's data directory")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        raise ExportError(f"SQLite database {url.database} does not exist")
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            try:
                session.execute(select(ReviewDB.id).limit(1))
            except SQLAlchemyError as error:
                raise ExportError(
                    f"cannot read reviews from {url.render_as_string()}: {error.orig or error}"
                ) from None
            return write_reviewed_dataset(session, BlobStore(blob_root), DirectorySink(out))
    finally:
        engine.dispose()


def export_to_zip(session: Session, blobs: BlobStorage, target: io.BufferedIOBase | Path) -> Manifest:
    """Export the reviewed set as a zip archive written to `target` (a path or a binary file)."""
    with zipfile.ZipFile(target, "w") as archive:
        return write_reviewed_dataset(session, blobs, ZipSink(archive))
