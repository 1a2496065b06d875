"""Which defect types does a bundle find? Pixel AUROC and AUPRO per type, per surface and their mean.

A split's mean over all types hides the type a model cannot see. Here each type is scored on its own:
per surface, that surface's defect-free test images with its images of the type, then the mean and
the worst surface. The bundle runs through the service's own `Predictor`, as `run-regimes` ran it
(`run-regimes` keeps each row's bundle in `OUT/bundles/<regime>`).

    python -m benchmarks.accuracy.defect_types --bundle bench/b-labels/bundles/5 --data bench/split-b \
        --json docs/results/split-b/defect-types.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.results_json import add_json_option, write_results
from benchmarks.runner import TestSet, load_test_set
from benchmarks.scoring import mean_and_worst
from training.metrics import aupro, auroc

TYPE_KEYS = ("pixel_auroc", "aupro")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", type=Path, required=True, help="a bundle directory (run-regimes keeps them)"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="a split written by make-data (its test/ is scored)"
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    add_json_option(parser)
    return parser.parse_args(argv)


def type_rows(maps: list[np.ndarray], test: TestSet) -> list[dict]:
    """One row per defect type: pixel AUROC and AUPRO per surface, their mean and the worst surface."""
    rows = []
    for defect_type in sorted({t for types in test.types for t in types}):
        per_surface = {}
        for surface in sorted(set(test.surfaces)):
            chosen = [
                i
                for i, s in enumerate(test.surfaces)
                if s == surface and (not test.masks[i].any() or defect_type in test.types[i])
            ]
            if not any(test.masks[i].any() for i in chosen):
                continue
            scores = np.concatenate([maps[i].ravel() for i in chosen])
            labels = np.concatenate([test.masks[i].ravel() for i in chosen])
            per_surface[surface] = {
                "pixel_auroc": auroc(scores, labels),
                "aupro": aupro([maps[i] for i in chosen], [test.masks[i] for i in chosen]),
            }
        rows.append({"defect_type": defect_type, **_mean_and_worst(per_surface), "per_surface": per_surface})
    return rows


def _mean_and_worst(per_surface: dict[str, dict[str, float]]) -> dict[str, float]:
    mean, worst = mean_and_worst(per_surface)
    return {**{k: mean[k] for k in TYPE_KEYS}, **{f"worst_{k}": worst[k] for k in TYPE_KEYS}}


def main(argv: list[str] | None = None) -> None:
    from inspect_svc.bundle import load_bundle
    from inspect_svc.engine.predictor import Predictor

    args = parse_args(argv)
    predictor = Predictor(
        load_bundle(args.bundle), providers=["CPUExecutionProvider"], intra_op_threads=args.threads
    )
    test = load_test_set(args.data / "test")
    rows = type_rows([predictor.predict(image) for image in test.images], test)
    print("| defect type | pixel AUROC (worst surface) | AUPRO (worst surface) |")
    print("|---|---|---|")
    for row in rows:
        print(
            f"| {row['defect_type']} | {row['pixel_auroc']:.3f} ({row['worst_pixel_auroc']:.3f}) | "
            f"{row['aupro']:.3f} ({row['worst_aupro']:.3f}) |"
        )
    write_results(args, "defect_types", rows)


if __name__ == "__main__":
    main()
