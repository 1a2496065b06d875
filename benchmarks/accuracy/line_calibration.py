"""Would a per-line calibration of the served map raise the pooled metrics, and what does it need?

Pooled pixel AUROC asks a defect pixel to outscore the normal pixels of every surface. One model
serving several lines puts their normal levels at different heights (docs/archive/benchmarks-journal.md §3), so a
defect that its own frame ranks first can still sit below a coarser surface's normal pixels. A
monotone remap per line keeps each line's own ranking and moves the lines' normal levels together:
here an affine map in logit space that sends the line's normal quantiles `low` and `high` to the
probabilities 0.05 and 0.5 (what the anomaly branch's calibration does with distances).

The remap is fitted three ways and each is scored on the test folder:
- "validation": normal pixels of the run's own validation frames (outside each mask, dilated),
  what `finetune` could fit it on;
- "oracle": the test frames' own normal pixels, the best any such remap can do;
- "pooled": one remap for all lines, a sanity row (monotone, so it must not change any AUROC).
`--json PATH` also writes the rows (and the map as served) with the settings.

    python -m benchmarks.accuracy.line_calibration --run runs/s900/seed-1/runs/hybrid-runs-probe-cpu-random-k5 \
        --data runs/s900/seed-1/splits/pool --labeled-defects 5 --seed 1 --test runs/s900/seed-1/splits/test
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from benchmarks.accuracy.run_split import predictor_of, rebuild_split, run_split_parser
from benchmarks.results_json import add_json_option, write_results
from training.data.labeled import load_labeled_set
from training.finetune import load_images_with_masks
from training.metrics import aupro, auroc, image_scores
from training.runs import load_run

EPS = 1e-6
LOGIT_AT_LOW = float(np.log(0.05 / 0.95))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = run_split_parser(__doc__)
    parser.add_argument(
        "--quantiles", default="0.5:0.99,0.5:0.999,0.9:0.999", help="low:high normal quantile pairs to try"
    )
    parser.add_argument(
        "--margin",
        type=int,
        default=4,
        help="pixels the masks are dilated by before their outside counts as normal",
    )
    add_json_option(parser)
    return parser.parse_args(argv)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def normal_pixels(maps: list[np.ndarray], masks: list[np.ndarray], margin: int) -> np.ndarray:
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    parts = [m[cv2.dilate(k.astype(np.uint8), kernel) == 0] for m, k in zip(maps, masks, strict=True)]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def fit_remap(normal: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(offset, gain) with logit' = (logit − offset) · gain: normal quantile `high` → 0.5, `low` → 0.05."""
    z_low, z_high = np.quantile(logit(normal), [low, high])
    return float(z_high), float(-LOGIT_AT_LOW / max(z_high - z_low, 1e-3))


def apply_remap(p: np.ndarray, remap: tuple[float, float]) -> np.ndarray:
    offset, gain = remap
    return (1.0 / (1.0 + np.exp(-(logit(p) - offset) * gain))).astype(np.float32)


def scores(maps: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    labels = np.concatenate([m.ravel() for m in masks]).astype(bool)
    return {
        "pixel_auroc": auroc(np.concatenate([m.ravel() for m in maps]), labels),
        "aupro": float(aupro(maps, masks)),
        "image_auroc": auroc(image_scores(maps), np.array([m.any() for m in masks])),
    }


def cells(metrics: dict[str, float]) -> str:
    return f"{metrics['pixel_auroc']:.3f} / {metrics['aupro']:.3f} / {metrics['image_auroc']:.3f}"


def per_line(maps: list[np.ndarray], masks: list[np.ndarray], lines: list[str]) -> dict[str, float]:
    """Each line's own pixel AUROC."""
    aurocs = {}
    for line in sorted(set(lines)):
        idx = [i for i, owner in enumerate(lines) if owner == line]
        labels = np.concatenate([masks[i].ravel() for i in idx]).astype(bool)
        aurocs[line] = auroc(np.concatenate([maps[i].ravel() for i in idx]), labels)
    return aurocs


def remapped(
    maps: list[np.ndarray], lines: list[str], remaps: dict[str, tuple[float, float]]
) -> list[np.ndarray]:
    return [apply_remap(m, remaps[line]) for m, line in zip(maps, lines, strict=True)]


def line_remaps(
    maps: list[np.ndarray], masks: list[np.ndarray], lines: list[str], margin: int, low: float, high: float
) -> dict[str, tuple[float, float]]:
    remaps = {}
    for line in sorted(set(lines)):
        idx = [i for i, owner in enumerate(lines) if owner == line]
        remaps[line] = fit_remap(
            normal_pixels([maps[i] for i in idx], [masks[i] for i in idx], margin), low, high
        )
    return remaps


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = load_run(args.run)
    predictor = predictor_of(run)
    _, _, val = rebuild_split(run, args.run, args.data, args.labeled_defects, args.seed)
    test = load_images_with_masks(load_labeled_set(args.test).samples)
    val_lines, test_lines = [s.line for s in val.samples], [s.line for s in test.samples]
    print(
        f"validation frames per line: { {line: val_lines.count(line) for line in sorted(set(val_lines))} }",
        flush=True,
    )
    val_maps = [predictor.predict(image) for image in val.images]
    test_maps = [predictor.predict(image) for image in test.images]
    served, served_lines = scores(test_maps, test.masks), per_line(test_maps, test.masks, test_lines)
    line_cells = ", ".join(f"{line} {value:.3f}" for line, value in served_lines.items())
    print(f"\nas served: {cells(served)}  per line: {line_cells}\n")
    print("| remap fitted on | quantiles | pixel AUROC / AUPRO / image AUROC |")
    print("|---|---|---|")
    rows = []
    for pair in args.quantiles.split(","):
        low, high = (float(q) for q in pair.split(":"))
        pooled = fit_remap(normal_pixels(val_maps, val.masks, args.margin), low, high)
        fits = {
            "pooled (one remap)": {line: pooled for line in test_lines},
            "validation, per line": line_remaps(val_maps, val.masks, val_lines, args.margin, low, high),
            "oracle: test normals, per line": line_remaps(
                test_maps, test.masks, test_lines, args.margin, low, high
            ),
        }
        for name, remaps in fits.items():
            missing = set(test_lines) - set(remaps)
            remaps = {**{line: pooled for line in missing}, **remaps}
            metrics = scores(remapped(test_maps, test_lines, remaps), test.masks)
            print(f"| {name} | {low}:{high} | {cells(metrics)} |", flush=True)
            rows.append({"fitted_on": name, "low": low, "high": high, **metrics})
    write_results(args, "line_calibration", rows, as_served={**served, "per_line_pixel_auroc": served_lines})


if __name__ == "__main__":
    main()
