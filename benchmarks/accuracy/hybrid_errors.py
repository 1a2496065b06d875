"""Where does a hybrid run lose its pixel AUROC? Per-image shares of the loss, per-type metrics, and
what the fusion weight and a dihedral test-time augmentation would change.

Pixel AUROC is the share of (defect pixel, normal pixel) pairs ranked right, so 1 − AUROC splits
exactly over images, from either side: each defect pixel's share of normal pixels scored above it
(misses), or each normal pixel's share of defect pixels scored below it (false alarms). The largest
shares name the images to look at. The run's two branches are then re-fused at other weights, with
and without averaging the 8 turns and flips of each frame (8 passes: a cost, not a default).
`--json PATH` also writes both tables' rows and the settings.

    python -m benchmarks.accuracy.hybrid_errors --run runs/ls-insp/runs/hybrid-runs-pt-insp-k5 \
        --data runs/ls-insp/splits/test [--only-types scratch,crack] [--tta]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.accuracy.run_split import load_hybrid_run, predictor_of
from benchmarks.results_json import add_json_option, write_results
from training.data.labeled import load_labeled_set
from training.evaluate import metrics_by_group
from training.finetune import LabeledImages, load_images_with_masks
from training.models.hybrid import fuse_branches
from training.predictor import TorchPredictor

Branches = tuple[np.ndarray, np.ndarray]  # (p_head, p_anomaly) of one frame


def loss_shares(maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, its share of 1 − pixel AUROC as misses and as false alarms (each side sums to 1 − AUROC)."""
    normal = np.sort(np.concatenate([m[~k] for m, k in zip(maps, masks, strict=True)]))
    defect = np.sort(np.concatenate([m[k] for m, k in zip(maps, masks, strict=True)]))
    misses = np.array(
        [
            (1 - np.searchsorted(normal, m[k], side="right") / normal.size).sum() / defect.size
            for m, k in zip(maps, masks, strict=True)
        ]
    )
    alarms = np.array(
        [
            (np.searchsorted(defect, m[~k], side="left") / defect.size).sum() / normal.size
            for m, k in zip(maps, masks, strict=True)
        ]
    )
    return misses, alarms


def branch_maps(predictor: TorchPredictor, image: np.ndarray, tta: bool) -> Branches:
    """The run's two branch maps of a frame, averaged over its 8 turns and flips with `tta`."""
    model = predictor.model
    views = [(turns, flip) for turns in range(4) for flip in (False, True)] if tta else [(0, False)]
    heads, anomalies = [], []
    for turns, flip in views:
        view = np.rot90(image, turns)
        view = np.ascontiguousarray(view[:, ::-1] if flip else view)
        head, anomaly = predictor.predict_outputs(view, model.branch_probabilities)
        if flip:
            head, anomaly = head[:, ::-1], anomaly[:, ::-1]
        heads.append(np.rot90(head, -turns))
        anomalies.append(np.rot90(anomaly, -turns))
    return np.mean(heads, axis=0), np.mean(anomalies, axis=0)


CELL_METRICS = ("pixel_auroc", "aupro", "image_auroc")


def per_type(
    maps: list[np.ndarray], data: LabeledImages, thresholds: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Overall ("all") and per-defect-type cells, grouped as `train-pipeline evaluate` groups them."""
    grouped = metrics_by_group(maps, data.masks, [s.defect_types for s in data.samples], thresholds)
    groups = {"all": grouped["overall"], **grouped["per_defect_type"]}
    return {name: {key: m[key] for key in CELL_METRICS} for name, m in groups.items()}


def per_type_text(groups: dict[str, dict[str, float]]) -> str:
    return " | ".join(
        f"{name} {m['pixel_auroc']:.3f} / {m['aupro']:.3f} / {m['image_auroc']:.3f}"
        for name, m in groups.items()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a hybrid run folder (finetune's --out)")
    parser.add_argument("--data", type=Path, required=True, help="labeled test folder")
    parser.add_argument(
        "--only-types", default="", help="keep defective images of these types (and every normal one)"
    )
    parser.add_argument("--tta", action="store_true", help="also score the 8-view dihedral average")
    parser.add_argument("--top", type=int, default=8, help="images listed per side")
    add_json_option(parser)
    args = parser.parse_args(argv)

    run = load_hybrid_run(args.run, "needs a hybrid one")
    wanted = {t for t in args.only_types.split(",") if t}
    samples = [
        s
        for s in load_labeled_set(args.data).samples
        if not wanted or not s.defective or wanted & set(s.defect_types)
    ]
    data = load_images_with_masks(samples)
    predictor = predictor_of(run)
    weight = float(run.model.fusion_weight)

    served = [predictor.predict(image) for image in data.images]
    misses, alarms = loss_shares(served, data.masks)
    print(
        f"{len(data.images)} images; cells: pixel AUROC / AUPRO / image AUROC; 1 − pixel AUROC = {misses.sum():.4f}"
    )
    rows: list[dict] = []
    for side, shares in (("misses", misses), ("false alarms", alarms)):
        print(f"largest shares as {side}:")
        for index in np.argsort(shares)[::-1][: args.top]:
            sample = data.samples[index]
            print(f"  {shares[index]:.4f}  {sample.stem}  {','.join(sample.defect_types) or 'defect-free'}")
            rows.append(
                {
                    "table": f"largest shares as {side}",
                    "image": sample.stem,
                    "types": list(sample.defect_types),
                    "share": float(shares[index]),
                }
            )

    for tta in (False, True) if args.tta else (False,):
        branches = [branch_maps(predictor, image, tta) for image in data.images]
        for w in sorted({0.0, 0.25, 0.5, 0.75, 1.0, weight}):
            fused = [fuse_branches(head, anomaly, w) for head, anomaly in branches]
            label = f"{'8-view TTA, ' if tta else ''}w = {w:.2f}{' (the run’s)' if w == weight else ''}"
            groups = per_type(fused, data, run.thresholds)
            print(f"{label:<26} {per_type_text(groups)}")
            rows.append(
                {
                    "table": "fusion weight",
                    "tta": tta,
                    "fusion_weight": w,
                    "runs_own": w == weight,
                    "groups": groups,
                }
            )
    write_results(
        args, "hybrid_errors", rows, images=len(data.images), one_minus_pixel_auroc=float(misses.sum())
    )


if __name__ == "__main__":
    main()
