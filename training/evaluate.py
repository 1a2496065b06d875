"""Evaluate a model run or a bundle on a labeled set: metrics.json and a visual report.

A bundle is run by the service's own `Predictor` (ONNX Runtime, the service's tiling and
normalisation), so what is measured is what is served; a run directory is exported to a temporary
bundle first and measured the same way (PyTorch, through the same tiling functions, only if that
export fails). Metrics are computed overall, per defect type (that type's images plus every
defect-free image), for thin defects (scratches and cracks), which a patch model misses first, and
per line (surface) with the mean over lines and the worst line: a mean hides the worst surface.
Besides the ranking metrics (pixel AUROC, AUPRO, pixel AP) each group reports the verdicts at the
stored image threshold (precision, recall, false-alarm rate), the decisions a line acts on.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inspect_svc.bundle import Bundle
from training.data.labeled import LabeledSample
from training.errors import UserError
from training.metrics import line_breakdown, segmentation_summary
from training.progress import progress
from training.report import Case, write_report
from training.training_data import Overlap, read_training_images, training_overlap

if TYPE_CHECKING:
    from training.data.labeled import LabeledImages

log = logging.getLogger(__name__)

THIN_DEFECT_TYPES = frozenset({"scratch", "crack"})
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class LoadedModel:
    """A whole-frame predictor and the thresholds stored with it."""

    predict: Callable[[np.ndarray], np.ndarray]
    thresholds: dict[str, float]  # "pixel", "image", and "image_top_pixels" (k of the image score)
    source: str  # "bundle" or "run"
    root: Path | None = None  # the run or bundle folder (what it records about its training data)
    data_fingerprint: str = ""


def load_model(spec: Path, *, scratch: Path | None = None) -> LoadedModel:
    """A run directory (has model.pt) or a bundle (directory or .zip).

    A run is exported into `scratch` first (a parity-checked fp32 bundle, as `export` writes it)
    and evaluated through ONNX Runtime like a bundle: the served code path, and several times less
    CPU time than PyTorch's eager per-tile distances. Without `scratch`, or if the export fails, it
    runs in PyTorch through the same tiling code.

    Raises:
        UserError: neither, or a bundle that fails verification (e.g. a wrong sha256).
    """
    from inspect_svc.bundle import BundleError, load_bundle

    check_not_pretraining_run(spec)
    if (spec / "model.pt").is_file():
        return _load_run(spec, scratch)
    try:
        bundle = load_bundle(spec)
    except BundleError as error:
        raise UserError(str(error)) from None
    return _bundle_model(bundle, "bundle")


def _bundle_model(bundle: Bundle, source: str, root: Path | None = None) -> LoadedModel:
    from inspect_svc.engine.predictor import Predictor

    thresholds = bundle.manifest.thresholds
    return LoadedModel(
        Predictor(bundle).predict,
        {
            "pixel": thresholds.pixel,
            "image": thresholds.image,
            "image_top_pixels": bundle.manifest.image_score.top_pixels,
        },
        source,
        root or bundle.root,
        bundle.manifest.data_fingerprint,
    )


def _load_run(spec: Path, scratch: Path | None) -> LoadedModel:
    from training.predictor import TorchPredictor, default_overlap
    from training.runs import load_run

    if scratch is not None:
        from training.export import export_run

        try:
            return _bundle_model(export_run(spec, scratch / "bundle").bundle, "run", spec)
        except (UserError, ImportError) as error:  # parity failed, or the onnx packages are missing
            log.warning("evaluating in PyTorch instead of ONNX Runtime (slower): %s", error)
    run = load_run(spec)
    predictor = TorchPredictor(
        run.model, tile=run.tile, overlap=default_overlap(run.tile), mean=run.mean, std=run.std
    )
    return LoadedModel(
        predictor.predict, {"image_top_pixels": 1, **run.thresholds}, "run", spec, run.data_fingerprint
    )


def check_not_pretraining_run(spec: Path) -> None:
    """A pretraining run (or its backbone.pt) holds no defect model yet: say what to do with it.

    Raises:
        UserError: `spec` is a pretraining run folder or a backbone file.
    """
    from training.checkpoint import CHECKPOINT_FILE
    from training.models.backbone import BACKBONE_FILE

    is_run = (
        spec.is_dir()
        and not (spec / "model.pt").is_file()
        and any((spec / name).is_file() for name in (BACKBONE_FILE, CHECKPOINT_FILE))
    )
    if is_run or (spec.is_file() and spec.suffix == ".pt"):
        raise UserError(
            f"{spec} is a pretraining run: finetune or fit-normal it first "
            f"(train-pipeline finetune --backbone {spec} --data LABELED --out RUN), then evaluate RUN"
        )


def evaluate(
    model_spec: Path,
    data: Path,
    out: Path,
    *,
    report_count: int = 8,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Predict every labeled image, write `metrics.json` and `report.html` into `out`; returns the metrics.

    `warn` receives a one-line warning before the work starts when the model was made from some of
    the evaluated images (default: the log).

    Raises:
        UserError: unreadable model, empty or inconsistent labeled set.
    """
    from training.data.labeled import load_images_with_masks, load_labeled_set

    check_not_pretraining_run(model_spec)
    labeled = load_labeled_set(data)
    loaded = load_images_with_masks(labeled.samples)
    if not loaded.images:
        raise UserError(f"{data} holds no readable image")
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        model = load_model(model_spec, scratch=Path(scratch))
        return _evaluate(model, data, loaded, out, report_count, warn)


def _evaluate(
    model: LoadedModel,
    data: Path,
    loaded: LabeledImages,
    out: Path,
    report_count: int,
    warn: Callable[[str], None] | None,
) -> dict:
    overlap = overlap_with_training(model, data, loaded.samples)
    if overlap.seen:
        (warn or log.warning)(overlap.warning())
    maps = [model.predict(image) for image in progress(loaded.images, "evaluating")]
    metrics = metrics_by_group(
        maps,
        loaded.masks,
        [s.defect_types for s in loaded.samples],
        model.thresholds,
        lines=[s.line for s in loaded.samples],
    )
    metrics["model"] = {"source": model.source, "thresholds": model.thresholds}
    metrics["training_overlap"] = {"seen_in_training": overlap.seen, "evaluated": overlap.evaluated}
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    cases = [
        Case(s.stem, img, m, p, s.defect_types)
        for s, img, m, p in zip(loaded.samples, loaded.images, loaded.masks, maps, strict=True)
    ]
    write_report(out, cases, metrics, model.thresholds["pixel"], count=report_count)
    return metrics


HEADLINE = (
    "pixel_auroc",
    "aupro",
    "pixel_ap",
    "image_auroc",
    "f1",
    "iou",
    "verdict_precision",
    "verdict_recall",
    "false_alarm_rate",
)


def overlap_with_training(model: LoadedModel, data: Path, samples: list[LabeledSample]) -> Overlap:
    """How many evaluated images the model was made from: by content hash where the run recorded them,
    else (older runs) all or none, by comparing the whole folder's fingerprint with the run's."""
    from training.runs import data_fingerprint

    images = [s.image for s in samples]
    trained = read_training_images(model.root) if model.root is not None else None
    if trained is not None:
        return training_overlap(trained, images)
    files = [p for s in samples for p in (s.image, s.mask) if p is not None and p.is_relative_to(data)]
    same = bool(model.data_fingerprint) and data_fingerprint(files, data) == model.data_fingerprint
    return Overlap(seen=len(images) if same else 0, evaluated=len(images))


def metrics_by_group(
    maps: list[np.ndarray],
    masks: list[np.ndarray],
    types: list[tuple[str, ...]],
    thresholds: dict[str, float],
    *,
    lines: list[str | None] | None = None,
) -> dict:
    """Overall metrics plus `per_defect_type` and `thin_defects` (each group with all defect-free images).

    With `lines` (each image's line, or None), also `per_line` (each line's own images) and `lines`
    (`training.metrics.line_breakdown`: the mean over lines and the worst line), when there are two
    lines or more. Images are scored with `thresholds["image_top_pixels"]` (1, the maximum, if absent).
    """
    top_pixels = int(thresholds.get("image_top_pixels", 1))

    def summary(indices: list[int]) -> dict:
        return segmentation_summary(
            [maps[i] for i in indices],
            [masks[i] for i in indices],
            pixel_threshold=thresholds["pixel"],
            image_threshold=thresholds["image"],
            top_pixels=top_pixels,
        )

    normal = [i for i, m in enumerate(masks) if not m.any()]
    result: dict = {"overall": summary(list(range(len(maps))))}
    result.update({k: result["overall"][k] for k in HEADLINE})
    names = sorted({t for group in types for t in group})
    result["per_defect_type"] = {
        name: summary(normal + [i for i, group in enumerate(types) if name in group and masks[i].any()])
        for name in names
    }
    thin = [i for i, group in enumerate(types) if THIN_DEFECT_TYPES & set(group) and masks[i].any()]
    if thin:
        result["thin_defects"] = summary(normal + thin)
    named = sorted({line for line in lines or [] if line is not None})
    if len(named) >= 2:
        result["per_line"] = {
            name: summary([i for i, line in enumerate(lines or []) if line == name]) for name in named
        }
        result["lines"] = line_breakdown(result["per_line"])
    return result
