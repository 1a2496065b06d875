"""Does a model's image threshold keep its promise on a test folder, and what does the image score's k change?

Prints, for a run or a bundle on a labeled test folder:
- image AUROC and image AP for several k of the image score (the mean of the k hottest pixels;
  k = 1 is the maximum, the score every bundle used before);
- the verdicts at the stored image threshold (with the stored k): recall, precision, false-alarm
  rate, overall and per line, beside what training promised (`metrics.decision`: the recall it was
  chosen for and the false-alarm rate expected on validation);
- for a bundle with per-line calibrations (`train-pipeline calibrate`), the verdicts of each
  calibrated line at its own threshold.

    python -m benchmarks.accuracy.decisions --model runs/ft --data runs/demo-test/labeled --top-pixels 1,16,64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inspect_svc.bundle import load_bundle
from training.data.labeled import load_labeled_set
from training.evaluate import load_model
from training.finetune import load_images_with_masks
from training.metrics import auroc, average_precision, binary_scores, image_scores


def promised(model: Path) -> dict:
    """`metrics.decision` of a run (metrics.json → validation) or a bundle (model.json → metrics)."""
    if (model / "model.pt").is_file():
        return json.loads((model / "metrics.json").read_text()).get("validation", {}).get("decision", {})
    return json.loads((model / "model.json").read_text()).get("metrics", {}).get("decision", {})


def verdict_line(name: str, scores: np.ndarray, labels: np.ndarray, threshold: float) -> str:
    v = binary_scores(scores, labels, threshold)
    return (
        f"{name:<12} recall {v.recall:.3f} ({v.true_positives}/{v.true_positives + v.false_negatives})  "
        f"precision {v.precision:.3f}  false-alarm rate {v.false_alarm_rate:.3f} "
        f"({v.false_positives}/{v.false_positives + v.true_negatives})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or bundle folder")
    parser.add_argument("--data", type=Path, required=True, help="labeled test folder")
    parser.add_argument("--top-pixels", default="1,16,64", help="k values of the image score to compare")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    loaded = load_images_with_masks(load_labeled_set(args.data).samples)
    maps = [model.predict(image) for image in loaded.images]
    labels = np.asarray([m.any() for m in loaded.masks])
    lines = np.asarray([s.line or "-" for s in loaded.samples])
    print(f"{len(maps)} test images ({labels.sum()} defective), lines {sorted(set(lines.tolist()))}")
    for k in (int(v) for v in args.top_pixels.split(",")):
        scores = image_scores(maps, k)
        print(
            f"k = {k:>4}: image AUROC {auroc(scores, labels):.3f}, image AP {average_precision(scores, labels):.3f}"
        )
    k, threshold = int(model.thresholds.get("image_top_pixels", 1)), model.thresholds["image"]
    decision = promised(args.model)
    print(
        f"stored: k = {k}, image threshold {threshold:.4f}; promised on validation: "
        f"recall {decision.get('target_recall')} (reached {decision.get('expected_recall')}), "
        f"false-alarm rate {decision.get('expected_false_alarm_rate')}"
    )
    scores = image_scores(maps, k)
    print(verdict_line("all lines", scores, labels, threshold))
    for line in sorted(set(lines)):
        picked = lines == line
        print(verdict_line(line, scores[picked], labels[picked], threshold))
    calibrated = (
        {} if (args.model / "model.pt").is_file() else load_bundle(args.model).manifest.line_calibration
    )
    if calibrated:
        print("at each line's calibrated threshold (train-pipeline calibrate):")
    for line, calibration in sorted(calibrated.items()):
        picked = lines == line
        print(
            verdict_line(line, scores[picked], labels[picked], calibration.image)
            + f"  [threshold {calibration.image:.4f}, {calibration.false_alarm_rate:.3f} on its "
            f"{calibration.normal_images} calibration images]"
        )


if __name__ == "__main__":
    main()
