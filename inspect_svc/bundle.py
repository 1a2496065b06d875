"""The model bundle: the one contract between training and the service.

A bundle is a directory (or a .zip of one) holding `model.onnx` and `model.json`. `model.json` is
`BundleManifest`; the service needs nothing else to run a model.

Fields added after the first bundles were written all have defaults that mean what those bundles
did, so an old `model.json` still loads and decides as before: `image_score.top_pixels` = 1 (the
map's maximum), no `line_calibration` and no `training_config` (the settings the run was trained
with, for people: the service never reads them). `metrics["decision"]`, when training wrote it, records
how the image threshold was chosen: `target_recall`, and the `expected_recall` and
`expected_false_alarm_rate` measured on validation at that threshold (see `training.decision`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUNDLE_FORMAT_VERSION: Final = 1
MANIFEST_NAME = "model.json"
ONNX_NAME = "model.onnx"


class BundleError(ValueError):
    """A bundle that is missing, malformed or does not match its checksum."""


class Thresholds(BaseModel):
    """Decision thresholds on the probability map; kept outside the graph so operators can move them."""

    model_config = ConfigDict(extra="forbid")

    pixel: float = Field(0.5, ge=0.0, le=1.0, description="a pixel is defective at or above this probability")
    image: float = Field(
        0.5, ge=0.0, le=1.0, description="an image is defective when its image score reaches this"
    )
    min_region_area: int = Field(
        1, ge=1, description="connected defect regions smaller than this are dropped"
    )


class ImageScore(BaseModel):
    """How a probability map becomes one image score (`inspect_svc.engine.regions.image_score`)."""

    model_config = ConfigDict(extra="forbid")

    top_pixels: int = Field(
        1, ge=1, description="the score is the mean of this many hottest pixels; 1 is the map's maximum"
    )


class LineCalibration(BaseModel):
    """An image threshold for one line, set on that line's own defect-free images (`train-pipeline calibrate`).

    It replaces the bundle's image threshold for frames of that line; an operator's override through
    `PUT /lines/{line}/threshold` still comes first.
    """

    model_config = ConfigDict(extra="forbid")

    image: float = Field(..., ge=0.0, le=1.0, description="the line's image threshold")
    target_false_alarm_rate: float = Field(
        ..., ge=0.0, le=1.0, description="the false-alarm rate it was set for"
    )
    false_alarm_rate: float = Field(..., ge=0.0, le=1.0, description="measured on those images at `image`")
    normal_images: int = Field(..., ge=1, description="defect-free images it was measured on")


class Tiling(BaseModel):
    """How frames larger than the model's input are cut into overlapping tiles."""

    model_config = ConfigDict(extra="forbid")

    tile: int = Field(..., gt=0, description="tile side in pixels; equals the graph's input size")
    overlap: int = Field(..., ge=0, description="pixels shared by neighbouring tiles")

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> Tiling:
        if self.overlap >= self.tile:
            raise ValueError(f"overlap {self.overlap} must be smaller than the tile {self.tile}")
        return self


class BundleManifest(BaseModel):
    """`model.json`: everything the service needs to run and describe a model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[1] = BUNDLE_FORMAT_VERSION
    model_version: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    created_at: datetime
    kind: Literal["supervised", "zero-label", "hybrid"]
    backbone: str
    patch_size: int = Field(..., gt=0)
    input_size: int = Field(..., gt=0, description="square tile side of the graph input")
    input_name: str = "image"
    output_name: str = "prob"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_semantics: str = "probability of defect per pixel, float32 [N, 1, H, W]"
    # Arithmetic inside the graph; inputs and outputs are float32 whatever it is.
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    image_score: ImageScore = Field(default_factory=ImageScore)
    line_calibration: dict[str, LineCalibration] = Field(default_factory=dict)
    tiling: Tiling
    metrics: dict[str, float | int | str | dict[str, Any]] = Field(default_factory=dict)
    data_fingerprint: str = ""
    training_config: dict[str, Any] | None = Field(
        None, description="the resolved settings of the training run (its config.json); none in older bundles"
    )
    onnx_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _tile_matches_input(self) -> BundleManifest:
        if self.tiling.tile != self.input_size:
            raise ValueError(f"tiling.tile {self.tiling.tile} differs from input_size {self.input_size}")
        return self

    def thresholds_for(self, line: str | None) -> Thresholds:
        """The bundle's thresholds for frames of `line`: its own calibrated image threshold, if it has one."""
        calibration = self.line_calibration.get(line) if line is not None else None
        if calibration is None:
            return self.thresholds
        return self.thresholds.model_copy(update={"image": calibration.image})


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: BundleManifest

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_NAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def write_bundle(root: Path, onnx_file: Path, manifest: BundleManifest) -> Bundle:
    """Write `model.onnx` and `model.json` into `root`, filling in the checksum of the graph."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / ONNX_NAME
    if onnx_file.resolve() != target.resolve():
        shutil.copyfile(onnx_file, target)
    manifest = manifest.model_copy(update={"onnx_sha256": sha256_file(target)})
    (root / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return Bundle(root=root, manifest=manifest)


def rewrite_manifest(bundle: Bundle, manifest: BundleManifest) -> Bundle:
    """Replace the `model.json` of a bundle directory (the graph, and so its checksum, stay as they are).

    Raises:
        BundleError: the manifest names another graph than the bundle's.
    """
    if manifest.onnx_sha256 != bundle.manifest.onnx_sha256:
        raise BundleError("a rewritten manifest must keep the checksum of the bundle's graph")
    path = bundle.root / MANIFEST_NAME
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(manifest.model_dump_json(indent=2) + "\n")
    scratch.replace(path)  # atomic: a reader sees the old manifest or the new one, never half of it
    return Bundle(root=bundle.root, manifest=manifest)


def load_bundle(path: Path | str, *, extract_to: Path | None = None) -> Bundle:
    """Read and verify a bundle directory or .zip.

    Raises:
        BundleError: missing files, an invalid manifest, or a graph whose sha256 differs from the manifest.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"model bundle {path} does not exist")
    root = _unzip(path, extract_to) if path.is_file() else path
    manifest_path, onnx_path = root / MANIFEST_NAME, root / ONNX_NAME
    for required in (manifest_path, onnx_path):
        if not required.is_file():
            raise BundleError(f"model bundle {path} has no {required.name}")
    try:
        manifest = BundleManifest.model_validate(json.loads(manifest_path.read_text()))
    except (json.JSONDecodeError, ValidationError) as error:
        raise BundleError(f"{manifest_path} is not a valid manifest: {_first_line(error)}") from None
    actual = sha256_file(onnx_path)
    if actual != manifest.onnx_sha256:
        raise BundleError(
            f"{onnx_path} does not match its manifest (sha256 {actual[:12]}…, expected "
            f"{manifest.onnx_sha256[:12]}…): the bundle is corrupt or was modified"
        )
    return Bundle(root=root, manifest=manifest)


def _unzip(path: Path, extract_to: Path | None) -> Path:
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is neither a bundle directory nor a .zip")
    target = extract_to or Path(tempfile.mkdtemp(prefix="bundle-"))
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            # A bundle is flat or one folder deep; refuse anything that would escape the target.
            if member.startswith("/") or ".." in Path(member).parts:
                raise BundleError(f"{path} holds an unsafe path {member!r}")
        archive.extractall(target)
    nested = [p for p in target.iterdir() if p.is_dir()]
    if not (target / MANIFEST_NAME).exists() and len(nested) == 1:
        return nested[0]
    return target


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
