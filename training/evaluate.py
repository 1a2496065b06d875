"""Evaluate a model run or a bundle on a labeled set: metrics.json and a visual report.

A bundle is run by the service's own `Predictor` (ONNX Runtime, the service's tiling and
normalisation), so what is measured is what is served; a run directory is run in PyTorch through the
same tiling functions. Metrics are computed overall, per defect type (that type's images plus every
defect-free image), for thin defects (scratches and cracks), which a patch model misses first, and
per line (surface) with the mean over lines and the worst line: a mean hides the worst surface.
Besides the ranking metrics (pixel AUROC, AUPRO, pixel AP) each group reports the verdicts at the
stored image threshold (precision, recall, false-alarm rate), the decisions a line acts on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import UserError
from training.metrics import line_breakdown, segmentation_summary
from training.report import Case, write_report

THIN_DEFECT_TYPES = frozenset({"scratch", "crack"})
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class LoadedModel:
    """A whole-frame predictor and the thresholds stored with it."""

    predict: Callable[[np.ndarray], np.ndarray]
    thresholds: dict[str, float]  # "pixel", "image", and "image_top_pixels" (k of the image score)
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
        return LoadedModel(predictor.predict, {"image_top_pixels": 1, **run.thresholds}, "run")
    try:
        bundle = load_bundle(spec)
    except BundleError as error:
        raise UserError(str(error)) from None
    from inspect_svc.engine.predictor import Predictor

    thresholds = bundle.manifest.thresholds
    return LoadedModel(Predictor(bundle).predict, {"pixel": thresholds.pixel, "image": thresholds.image,
                                                   "image_top_pixels": bundle.manifest.image_score.top_pixels}, "bundle")


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
    metrics = metrics_by_group(maps, loaded.masks, [s.defect_types for s in loaded.samples], model.thresholds,
                               lines=[s.line for s in loaded.samples])
    metrics["model"] = {"source": model.source, "thresholds": model.thresholds}
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    cases = [Case(s.stem, img, m, p) for s, img, m, p in zip(loaded.samples, loaded.images, loaded.masks, maps)]
    write_report(out, cases, metrics["overall"], model.thresholds["pixel"], count=report_count,
                 per_line=metrics.get("per_line"), lines=metrics.get("lines"))
    return metrics


HEADLINE = ("pixel_auroc", "aupro", "pixel_ap", "image_auroc", "f1", "iou", "verdict_precision", "verdict_recall",
            "false_alarm_rate")


def metrics_by_group(
    maps: list[np.ndarray], masks: list[np.ndarray], types: list[tuple[str, ...]], thresholds: dict[str, float],
    *, lines: list[str | None] | None = None,
) -> dict:
    """Overall metrics plus `per_defect_type` and `thin_defects` (each group with all defect-free images).

    With `lines` (each image's line, or None), also `per_line` (each line's own images) and `lines`
    (`training.metrics.line_breakdown`: the mean over lines and the worst line), when there are two
    lines or more. Images are scored with `thresholds["image_top_pixels"]` (1, the maximum, if absent).
    """
    top_pixels = int(thresholds.get("image_top_pixels", 1))

    def summary(indices: list[int]) -> dict:
        return segmentation_summary([maps[i] for i in indices], [masks[i] for i in indices],
                                    pixel_threshold=thresholds["pixel"], image_threshold=thresholds["image"],
                                    top_pixels=top_pixels)

    normal = [i for i, m in enumerate(masks) if not m.any()]
    result: dict = {"overall": summary(list(range(len(maps))))}
    result.update({k: result["overall"][k] for k in HEADLINE})
    names = sorted({t for group in types for t in group})
    result["per_defect_type"] = {
        name: summary(normal + [i for i, group in enumerate(types) if name in group and masks[i].any()]) for name in names
    }
    thin = [i for i, group in enumerate(types) if THIN_DEFECT_TYPES & set(group) and masks[i].any()]
    if thin:
        result["thin_defects"] = summary(normal + thin)
    named = sorted({line for line in lines or [] if line is not None})
    if len(named) >= 2:
        result["per_line"] = {name: summary([i for i, line in enumerate(lines or []) if line == name]) for name in named}
        result["lines"] = line_breakdown(result["per_line"])
    return result
