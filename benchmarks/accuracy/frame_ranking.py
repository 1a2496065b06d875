"""Is a defect missed on its own frame, or only when frames of other surfaces are pooled with it?

Pixel AUROC pools every test frame: a defect pixel must outscore the normal pixels of *all* frames,
those of coarser surfaces included. This bench scores each defective frame on its own (its defect
pixels against its own normal pixels) for the head, the anomaly branch and the fused map, next to
their mean probabilities inside and outside the defect. A branch that ranks a frame near 1.0 but
whose defect probability sits below other surfaces' normal level loses the defect to the pooling,
not to what it sees. With `--own-line-bank` the anomaly branch is also rebuilt from the defect-free
training images of the frame's own line only (the run's options otherwise): if that changes
nothing, retrieving the wrong surface's tiles is not the cause either. `--json PATH` also writes
the rows and the settings.

    python -m benchmarks.accuracy.frame_ranking --run runs/s900/seed-1/runs/hybrid-runs-probe-cpu-random-k5 \
        --data runs/s900/seed-1/splits/pool --labeled-defects 5 --seed 1 \
        --test runs/s900/seed-1/splits/test --only-types foreign_blend --own-line-bank
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.accuracy.run_split import fused_and_branches, load_hybrid_run, predictor_of, rebuild_split
from benchmarks.results_json import add_json_option, write_results
from training.data.labeled import load_labeled_set
from training.finetune import add_anomaly_branch, load_images_with_masks
from training.metrics import auroc
from training.predictor import TorchPredictor
from training.runs import RunModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a hybrid finetune run folder")
    parser.add_argument("--test", type=Path, required=True, help="labeled folder to score on")
    parser.add_argument("--only-types", default="", help="defective frames of these types only")
    parser.add_argument(
        "--own-line-bank", action="store_true", help="also score with a bank of the frame's line only"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="with --own-line-bank: the run's training folder"
    )
    parser.add_argument(
        "--labeled-defects", type=int, default=None, help="with --own-line-bank: as given to finetune"
    )
    parser.add_argument("--seed", type=int, default=0, help="with --own-line-bank: as given to finetune")
    parser.add_argument(
        "--bank-size", type=int, default=2048, help="with --own-line-bank: as given to finetune"
    )
    add_json_option(parser)
    return parser.parse_args(argv)


def own_line_models(run: RunModel, args: argparse.Namespace) -> dict[str, TorchPredictor]:
    """Per line, the run's model, its anomaly branch rebuilt from the line's defect-free training images."""
    if args.data is None:
        raise SystemExit("--own-line-bank needs --data (and --labeled-defects, --seed) of the run")
    config, train, val = rebuild_split(run, args.run, args.data, args.labeled_defects, args.seed)
    anomaly = run.model.anomaly
    setting = replace(
        config,
        anomaly_features=anomaly.source,
        anomaly_stride=anomaly.stride,
        anomaly_context=anomaly.context,
        neighbour_tiles=anomaly.config["neighbour_tiles"],
        bank_size=args.bank_size,
    )
    normal = [
        (s.line, image)
        for s, image, mask in zip(train.samples, train.images, train.masks, strict=True)
        if not mask.any()
    ]
    predictors = {}
    for line in sorted({line for line, _ in normal}):
        model = copy.deepcopy(run.model)
        predictor = predictor_of(run, model)
        own = [image for owner, image in normal if owner == line]
        add_anomaly_branch(model, predictor, own, val, setting, run.mean, run.std, torch.device("cpu"))
        predictors[line] = predictor
    return predictors


def frame_stats(probability: np.ndarray, defect: np.ndarray) -> dict[str, float]:
    """Mean probability inside / outside the defect, and the frame's own pixel AUROC."""
    return {
        "inside": float(probability[defect].mean()),
        "outside": float(probability[~defect].mean()),
        "pixel_auroc": auroc(probability.ravel(), defect.ravel()),
    }


def frame_cells(stats: dict[str, float]) -> str:
    return f"{stats['inside']:.3f} / {stats['outside']:.3f} / {stats['pixel_auroc']:.3f}"


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = load_hybrid_run(args.run, "compares a hybrid's branches")
    types = {t for t in args.only_types.split(",") if t}
    samples = [
        s
        for s in load_labeled_set(args.test).samples
        if s.defective and (not types or types & set(s.defect_types))
    ]
    test = load_images_with_masks(samples)
    predictor = predictor_of(run)
    per_line = own_line_models(run, args) if args.own_line_bank else {}
    header = "| frame | types | defect share | fused | head | anomaly branch |"
    header += " anomaly, own line's bank |" if per_line else ""
    print("Cells: mean probability inside / outside the defect / the frame's own pixel AUROC.\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for sample, image, mask in zip(test.samples, test.images, test.masks, strict=True):
        defect = mask.astype(bool)
        fused, head, anomaly = predictor.predict_outputs(image, partial(fused_and_branches, run.model))
        row = {
            "frame": sample.stem,
            "types": list(sample.defect_types),
            "defect_share": float(defect.mean()),
            "fused": frame_stats(fused, defect),
            "head": frame_stats(head, defect),
            "anomaly": frame_stats(anomaly, defect),
        }
        text = (
            f"| {sample.stem} | {', '.join(sample.defect_types)} | {row['defect_share']:.2f} "
            f"| {frame_cells(row['fused'])} | {frame_cells(row['head'])} | {frame_cells(row['anomaly'])} |"
        )
        if per_line:
            own = per_line[sample.line]
            _, own_anomaly = own.predict_outputs(image, own.model.branch_probabilities)
            row["anomaly_own_line_bank"] = frame_stats(own_anomaly, defect)
            text += f" {frame_cells(row['anomaly_own_line_bank'])} |"
        print(text, flush=True)
        rows.append(row)
    write_results(args, "frame_ranking", rows)


if __name__ == "__main__":
    main()
