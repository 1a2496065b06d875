"""Does a model's image threshold keep its promise on a test folder, and what does the image score's k change?

Prints, for a run or a bundle on a labeled test folder:
- image AUROC and image AP for several k of the image score (the mean of the k hottest pixels;
  k = 1 is the maximum, the score every bundle used before);
- the verdicts at the stored image threshold (with the stored k): recall, precision, false-alarm
  rate, overall and per line, beside what training promised (`metrics.decision`: the recall it was
  chosen for and the false-alarm rate expected on validation);
- for a bundle with per-line calibrations (`train-pipeline calibrate`), the verdicts of each
  calibrated line at its own threshold.
`--json PATH` also writes those rows and the settings.

    python -m benchmarks.accuracy.decisions --model runs/ft --data runs/demo-test/labeled --top-pixels 1,16,64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.results_json import add_json_option, write_results
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


def verdict_row(table: str, lines: str, scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """The verdicts at `threshold`: counts, recall, precision and false-alarm rate (one printed line)."""
    v = binary_scores(scores, labels, threshold)
    return {
        "table": table,
        "lines": lines,
        "threshold": float(threshold),
        "recall": v.recall,
        "precision": v.precision,
        "false_alarm_rate": v.false_alarm_rate,
        "true_positives": v.true_positives,
        "false_negatives": v.false_negatives,
        "false_positives": v.false_positives,
        "true_negatives": v.true_negatives,
    }


def verdict_text(row: dict) -> str:
    return (
        f"{row['lines']:<12} recall {row['recall']:.3f} ({row['true_positives']}/"
        f"{row['true_positives'] + row['false_negatives']})  precision {row['precision']:.3f}  "
        f"false-alarm rate {row['false_alarm_rate']:.3f} "
        f"({row['false_positives']}/{row['false_positives'] + row['true_negatives']})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or bundle folder")
    parser.add_argument("--data", type=Path, required=True, help="labeled test folder")
    parser.add_argument("--top-pixels", default="1,16,64", help="k values of the image score to compare")
    add_json_option(parser)
    args = parser.parse_args(argv)

    model = load_model(args.model)
    loaded = load_images_with_masks(load_labeled_set(args.data).samples)
    maps = [model.predict(image) for image in loaded.images]
    labels = np.asarray([m.any() for m in loaded.masks])
    lines = np.asarray([s.line or "-" for s in loaded.samples])
    print(f"{len(maps)} test images ({labels.sum()} defective), lines {sorted(set(lines.tolist()))}")
    rows = []
    for k in (int(v) for v in args.top_pixels.split(",")):
        scores = image_scores(maps, k)
        row = {
            "table": "image score",
            "top_pixels": k,
            "image_auroc": auroc(scores, labels),
            "image_ap": average_precision(scores, labels),
        }
        print(f"k = {k:>4}: image AUROC {row['image_auroc']:.3f}, image AP {row['image_ap']:.3f}")
        rows.append(row)
    k, threshold = int(model.thresholds.get("image_top_pixels", 1)), model.thresholds["image"]
    decision = promised(args.model)
    print(
        f"stored: k = {k}, image threshold {threshold:.4f}; promised on validation: "
        f"recall {decision.get('target_recall')} (reached {decision.get('expected_recall')}), "
        f"false-alarm rate {decision.get('expected_false_alarm_rate')}"
    )
    scores = image_scores(maps, k)
    stored = "verdicts at the stored threshold"
    verdicts = [verdict_row(stored, "all lines", scores, labels, threshold)]
    for line in sorted(set(lines)):
        picked = lines == line
        verdicts.append(verdict_row(stored, line, scores[picked], labels[picked], threshold))
    for row in verdicts:
        print(verdict_text(row))
    calibrated = (
        {} if (args.model / "model.pt").is_file() else load_bundle(args.model).manifest.line_calibration
    )
    if calibrated:
        print("at each line's calibrated threshold (train-pipeline calibrate):")
    for line, calibration in sorted(calibrated.items()):
        picked = lines == line
        row = verdict_row(
            "verdicts at each line's calibrated threshold",
            line,
            scores[picked],
            labels[picked],
            calibration.image,
        )
        row.update(
            calibration_false_alarm_rate=calibration.false_alarm_rate,
            calibration_images=calibration.normal_images,
        )
        print(
            verdict_text(row)
            + f"  [threshold {calibration.image:.4f}, {calibration.false_alarm_rate:.3f} on its "
            f"{calibration.normal_images} calibration images]"
        )
        verdicts.append(row)
    write_results(
        args,
        "decisions",
        rows + verdicts,
        test_images=len(maps),
        defective_images=int(labels.sum()),
        stored={"top_pixels": k, "image_threshold": threshold},
        promised=decision,
    )


if __name__ == "__main__":
    main()
