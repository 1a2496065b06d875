"""How a model's maps become verdicts a line can plan with: the image score and the image threshold.

- The image score is the mean of the `top_pixels` hottest pixels of a map
  (`inspect_svc.engine.regions.image_score`, which the service calls too), not its single hottest
  pixel, so one noisy pixel does not reject a part. `default_top_pixels` sets k from the tile.
- The image threshold is chosen for a **target recall** (a promised miss rate), not for best F1: it
  is the highest threshold at which that share of validation defects is caught. A few labeled
  validation defects cannot measure a recall of 0.95, so synthetic defects are added: the families of
  `training.data.defects` drawn on, and labeled defects of the training split pasted onto
  (`training.data.copy_paste`), the validation split's defect-free images. The false-alarm rate
  expected at that threshold is measured on the defect-free validation images and stored with it.
- A line then recalibrates the image threshold on its own defect-free images (`calibrate_line`,
  `train-pipeline calibrate`), which it has by the thousand: the false-alarm rate is what varies most
  between surfaces, and it is measured there directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data.copy_paste import DefectPiece, paste_piece
from training.data.defects import DEFECT_FAMILIES, DefectContext, apply_defect
from training.metrics import binary_scores, image_scores, threshold_for_false_alarm_rate, threshold_for_recall
from training.model_config import (  # the rule's constants live with the settings they default
    DEFAULT_TARGET_RECALL,
    TOP_PIXELS_TILE_SHARE,
)

# Synthetic defects added to validation: at least this many, at most this many per defect-free image.
MIN_SYNTHETIC_DEFECTS = 24
MAX_SYNTHETIC_PER_IMAGE = 6
DEFAULT_MAX_FALSE_ALARM_RATE = 0.01
# Above this expected false-alarm rate the stored threshold is reported as one a line cannot run on.
HIGH_FALSE_ALARM_RATE = 0.2
# Names the rule above; a study re-runs its saved results when it changes.
DECISION_RULE = (
    f"image threshold for recall {DEFAULT_TARGET_RECALL} on real + synthetic validation defects; "
    f"image score = mean of the top {TOP_PIXELS_TILE_SHARE:.6f} x tile area pixels"
)


@dataclass(frozen=True)
class ImageDecision:
    """The image threshold and what it promises, measured on validation.

    Attributes:
        threshold: the image threshold.
        top_pixels: k of the image score it applies to.
        target_recall: the recall it was chosen for, on real + synthetic validation defects.
        expected_recall: the recall reached there (≥ target).
        expected_recall_real: the recall on the real (labeled) validation defects alone; NaN without any.
        expected_false_alarm_rate: share of defect-free validation images at or above the threshold.
        real_defective / synthetic_defective / normal_images: the images it was measured on.
    """

    threshold: float
    top_pixels: int
    target_recall: float
    expected_recall: float
    expected_recall_real: float
    expected_false_alarm_rate: float
    real_defective: int
    synthetic_defective: int
    normal_images: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def warning(self) -> str | None:
        """A one-line warning when the threshold would flag so many good parts that a line cannot run on it."""
        if not self.expected_false_alarm_rate > HIGH_FALSE_ALARM_RATE:  # NaN (no normal image): no claim
            return None
        return (
            f"the image threshold for recall {self.target_recall:.2f} flags "
            f"{self.expected_false_alarm_rate:.0%} of the defect-free validation images: lower --target-recall, "
            "or set each line's threshold on its own defect-free images (train-pipeline calibrate)"
        )


def synthetic_defects(
    normal_images: Sequence[np.ndarray], pieces: Sequence[DefectPiece], seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Defective copies of defect-free images: drawn defect families, and pasted labeled pieces.

    Each image gets enough copies that together they reach `MIN_SYNTHETIC_DEFECTS` (at most
    `MAX_SYNTHETIC_PER_IMAGE` each). The kinds take turns: every family of `training.data.defects`,
    then a pasted piece when there are any. Deterministic for a seed.
    """
    if not normal_images:
        return [], []
    rng = np.random.default_rng(seed)
    per_image = min(MAX_SYNTHETIC_PER_IMAGE, math.ceil(MIN_SYNTHETIC_DEFECTS / len(normal_images)))
    kinds = [*sorted(DEFECT_FAMILIES), *(["paste"] if pieces else [])]
    images, masks = [], []
    for index, clean in enumerate(normal_images):
        foreign = normal_images[(index + 1) % len(normal_images)][::-1]
        for copy in range(per_image):
            kind = kinds[(index * per_image + copy) % len(kinds)]
            if kind == "paste":
                image, mask = _paste(clean, pieces[int(rng.integers(len(pieces)))], rng)
            else:
                image, mask = _draw_in_square(clean, kind, rng, DefectContext(foreign_texture=foreign))
            images.append(image)
            masks.append(mask)
    return images, masks


def _draw_in_square(
    clean: np.ndarray, family: str, rng: np.random.Generator, context: DefectContext
) -> tuple[np.ndarray, np.ndarray]:
    """A defect family drawn in a random square window (the families draw on square images)."""
    height, width = clean.shape[:2]
    side = min(height, width)
    top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    window = np.ascontiguousarray(clean[top : top + side, left : left + side])
    drawn, drawn_mask = apply_defect(window, family, rng, context)
    image, mask = clean.copy(), np.zeros((height, width), dtype=bool)
    image[top : top + side, left : left + side] = drawn
    mask[top : top + side, left : left + side] = drawn_mask
    return image, mask


def _paste(clean: np.ndarray, piece: DefectPiece, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pasted, mask = paste_piece(
        clean.astype(np.float32) / 255.0, np.zeros(clean.shape[:2], np.float32), piece, rng
    )
    return np.clip(pasted * 255.0 + 0.5, 0, 255).astype(np.uint8), mask > 0


def choose_image_threshold(
    real_defect_maps: Sequence[np.ndarray],
    synthetic_defect_maps: Sequence[np.ndarray],
    normal_maps: Sequence[np.ndarray],
    *,
    target_recall: float,
    top_pixels: int,
) -> ImageDecision:
    """The highest image threshold that catches `target_recall` of the real + synthetic defects.

    Raises:
        ValueError: no defective map at all, or a target outside (0, 1].
    """
    real = image_scores(real_defect_maps, top_pixels)
    synthetic = image_scores(synthetic_defect_maps, top_pixels)
    normal = image_scores(normal_maps, top_pixels)
    defects = np.concatenate([real, synthetic])
    scores = np.concatenate([defects, normal])
    labels = np.r_[np.ones(defects.size, bool), np.zeros(normal.size, bool)]
    threshold = min(1.0, threshold_for_recall(scores, labels, target_recall))
    at_threshold = binary_scores(scores, labels, threshold)
    return ImageDecision(
        threshold=threshold,
        top_pixels=top_pixels,
        target_recall=target_recall,
        expected_recall=at_threshold.recall,
        expected_recall_real=float(np.mean(real >= threshold)) if real.size else float("nan"),
        expected_false_alarm_rate=at_threshold.false_alarm_rate if normal.size else float("nan"),
        real_defective=int(real.size),
        synthetic_defective=int(synthetic.size),
        normal_images=int(normal.size),
    )


@dataclass(frozen=True)
class LineThreshold:
    """An image threshold set on one line's defect-free images."""

    image: float
    target_false_alarm_rate: float
    false_alarm_rate: float
    normal_images: int


def calibrate_line(
    normal_maps: Sequence[np.ndarray], *, max_false_alarm_rate: float, top_pixels: int
) -> LineThreshold:
    """The lowest image threshold that rejects at most `max_false_alarm_rate` of the line's normal images.

    Raises:
        ValueError: no map, or a rate outside [0, 1).
    """
    scores = image_scores(normal_maps, top_pixels)
    threshold = threshold_for_false_alarm_rate(scores, max_false_alarm_rate)
    return LineThreshold(
        image=threshold,
        target_false_alarm_rate=max_false_alarm_rate,
        false_alarm_rate=float(np.mean(scores >= threshold)),
        normal_images=int(scores.size),
    )


def calibrate_bundle(
    bundle_path: Path, normal: Path, line: str, *, max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE
) -> LineThreshold:
    """Set `line`'s image threshold in a bundle directory from the line's defect-free images.

    The images run through the service's own `Predictor` and image score, so the false-alarm rate
    measured here is the one the service will have on them. The result is written into the bundle's
    `model.json` (`line_calibration`), which the service applies to frames of that line; register
    (or re-register) the bundle afterwards.

    Raises:
        UserError: not a bundle directory, an invalid line name or rate, or fewer than 2 readable images.
    """
    from inspect_svc.api.inspect import NAME as LINE_NAME
    from inspect_svc.bundle import BundleError, LineCalibration, load_bundle, rewrite_manifest
    from inspect_svc.engine.predictor import Predictor
    from training.data.images import read_images
    from training.data.labeled import list_normal_images
    from training.errors import UserError

    if not 0.0 <= max_false_alarm_rate < 1.0:
        raise UserError(f"--max-false-alarm-rate must be in [0, 1), got {max_false_alarm_rate}")
    if not LINE_NAME.fullmatch(line):
        raise UserError(f"--line {line!r}: use 1-64 letters, digits and . _ : - (the service's line names)")
    if not bundle_path.is_dir():
        raise UserError(
            f"{bundle_path} is not a bundle directory (unzip a .zip bundle first: calibration writes into it)"
        )
    try:
        bundle = load_bundle(bundle_path)
    except BundleError as error:
        raise UserError(str(error)) from None
    images, _ = read_images(list_normal_images(normal))
    if len(images) < 2:
        raise UserError(
            f"{normal} holds {len(images)} readable defect-free image(s); calibration needs at least 2"
        )
    predictor = Predictor(bundle)
    result = calibrate_line(
        [predictor.predict(image) for image in images],
        max_false_alarm_rate=max_false_alarm_rate,
        top_pixels=bundle.manifest.image_score.top_pixels,
    )
    calibration = dict(bundle.manifest.line_calibration)
    calibration[line] = LineCalibration(**asdict(result))
    rewrite_manifest(bundle, bundle.manifest.model_copy(update={"line_calibration": calibration}))
    return result
