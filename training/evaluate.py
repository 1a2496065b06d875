"""Evaluate a model run or a bundle on a labeled set: metrics.json and a visual report.

A bundle is run by the service's own `Predictor` (ONNX Runtime, the service's tiling and
normalisation), so what is measured is what is served; a run directory is run in PyTorch through the
same tiling functions. Metrics are computed overall, per defect type (that type's images plus every
defect-free image), and for thin defects (scratches and cracks), which a patch model misses first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import UserError
from training.metrics import segmentation_summary
from training.report import Case, write_report

THIN_DEFECT_TYPES = frozenset({"scratch", "crack"})
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class LoadedModel:
    """A whole-frame predictor and the thresholds stored with it."""

    predict: Callable[[np.ndarray], np.ndarray]
    thresholds: dict[str, float]
    source: str  # "bundle" or "run"


def load_model(spec: Path) -> LoadedModel:
    """A run directory (has model.pt) or a bundle (directory or .zip).

    Raises:
        UserError: neither, or a bundle that fails verification (e.g. a wrong sha256).
    """
    from inspect_svc.bundle import BundleError, load_bundle

    if (spec / "model.pt").is_file():
        from training.hybrid import TorchPredictor, default_overlap, load_run

        run = load_run(spec)
        predictor = TorchPredictor(run.model, tile=run.tile, overlap=default_overlap(run.tile), mean=run.mean, std=run.std)
        return LoadedModel(predictor.predict, dict(run.thresholds), "run")
    try:
        bundle = load_bundle(spec)
    except BundleError as error:
        raise UserError(str(error)) from None
    from inspect_svc.engine.predictor import Predictor

    thresholds = bundle.manifest.thresholds
    return LoadedModel(Predictor(bundle).predict, {"pixel": thresholds.pixel, "image": thresholds.image}, "bundle")


def evaluate(model_spec: Path, data: Path, out: Path, *, report_count: int = 8) -> dict:
    """Predict every labeled image, write `metrics.json` and `report.html` into `out`; returns the metrics.

    Raises:
        UserError: unreadable model, empty or inconsistent labeled set.
    """
    from training.data.labeled import load_labeled_set
    from training.finetune import load_images_with_masks

    model = load_model(model_spec)
    labeled = load_labeled_set(data)
    loaded = load_images_with_masks(labeled.samples)
    if not loaded.images:
        raise UserError(f"{data} holds no readable image")
    maps = [model.predict(image) for image in loaded.images]
    metrics = metrics_by_group(maps, loaded.masks, [s.defect_types for s in loaded.samples], model.thresholds)
    metrics["model"] = {"source": model.source, "thresholds": model.thresholds}
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    cases = [Case(s.stem, img, m, p) for s, img, m, p in zip(loaded.samples, loaded.images, loaded.masks, maps)]
    write_report(out, cases, metrics["overall"], model.thresholds["pixel"], count=report_count)
    return metrics


def metrics_by_group(
    maps: list[np.ndarray], masks: list[np.ndarray], types: list[tuple[str, ...]], thresholds: dict[str, float]
) -> dict:
    """Overall metrics plus `per_defect_type` and `thin_defects` (each group with all defect-free images)."""

    def summary(indices: list[int]) -> dict:
        return segmentation_summary([maps[i] for i in indices], [masks[i] for i in indices],
                                    pixel_threshold=thresholds["pixel"], image_threshold=thresholds["image"])

    normal = [i for i, m in enumerate(masks) if not m.any()]
    result: dict = {"overall": summary(list(range(len(maps))))}
    result.update({k: result["overall"][k] for k in ("pixel_auroc", "aupro", "image_auroc", "f1", "iou")})
    names = sorted({t for group in types for t in group})
    result["per_defect_type"] = {
        name: summary(normal + [i for i, group in enumerate(types) if name in group and masks[i].any()]) for name in names
    }
    thin = [i for i, group in enumerate(types) if THIN_DEFECT_TYPES & set(group) and masks[i].any()]
    if thin:
        result["thin_defects"] = summary(normal + thin)
    return result
