"""How should the hybrid's memory bank be organised? Rebuilds the anomaly branch of a trained run.

Takes a fine-tuned hybrid run and the options it was trained with (data, labels per line, seed), so
the very same training/validation split is rebuilt; then, per setting, fills the bank again from the
defect-free training images (one bank, or a bank per normal tile with retrieval of the N nearest
tiles), recalibrates, refits the fusion weight, and scores the test folder: the fused model (fused
per tile, as its forward does) and the anomaly branch alone, overall and per defect type. With the
run's own settings it reproduces the cell `label-study` reports for that run. The head is not
retrained, so settings differ only in the bank. `--context` also varies what a bank row describes:
the 3x3 mean of the conv features alone (0), or with the mean and standard deviation over a larger
KxK window (`finetune --anomaly-context K`); `--pixel-weights` whether the image's own pixels join
the features, and at which weight (`finetune --anomaly-pixel-weight W`).
Prints a table; `--json PATH` (or `--out PATH`) also writes its rows and settings.

    python -m benchmarks.accuracy.anomaly_bank \
        --run runs/ls/runs/hybrid-runs-demo-bundle-pretrain-k5 --data runs/ls/splits/pool \
        --labeled-defects 5 --test runs/ls/splits/test --neighbour-tiles 0,1,2,4,8 --blur 2
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from functools import partial

import torch

from benchmarks.accuracy.run_split import (
    fused_and_branches,
    load_hybrid_run,
    predictor_of,
    rebuild_split,
    run_split_parser,
)
from benchmarks.results_json import add_json_option, write_results
from training.data.labeled import load_labeled_set
from training.evaluate import metrics_by_group
from training.finetune import add_anomaly_branch, load_images_with_masks
from training.models import anomaly as anomaly_module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = run_split_parser(__doc__)
    parser.add_argument(
        "--only-types", default="", help="score only these defect types (+ defect-free images)"
    )
    parser.add_argument("--neighbour-tiles", default="0,4", help="settings to compare, e.g. 0,1,2,4,8")
    parser.add_argument("--bank-sizes", default="2048", help="rows a query meets, e.g. 1024,2048,4096")
    parser.add_argument(
        "--blur", default="", help="smoothing sigmas in pixels to compare (default: the product's)"
    )
    parser.add_argument(
        "--context",
        default="",
        help="texture-statistics windows to compare, e.g. 0,7,11 "
        "(0: the 3x3 mean alone; default: the run's own)",
    )
    parser.add_argument(
        "--pixel-weights",
        default="",
        help="weights of the image's pixels in the bank rows to compare, e.g. 0,2,4 (default: the run's)",
    )
    add_json_option(parser, "--out")
    return parser.parse_args(argv)


Setting = tuple[int, int, float | None, int, float]  # neighbour tiles, bank rows, blur, context, pixel weight


def settings(args: argparse.Namespace, run_context: int, run_pixels: float) -> list[Setting]:
    blurs = [float(b) for b in args.blur.split(",") if b] or [None]
    contexts = [int(c) for c in args.context.split(",") if c] or [run_context]
    pixel_weights = [float(w) for w in args.pixel_weights.split(",") if w] or [run_pixels]
    return [
        (int(k), int(size), blur, context, pixels)
        for k in args.neighbour_tiles.split(",")
        for size in args.bank_sizes.split(",")
        for blur in blurs
        for context in contexts
        for pixels in pixel_weights
    ]


def cells(metrics: dict) -> str:
    return f"{metrics['pixel_auroc']:.3f} / {metrics['aupro']:.3f} / {metrics['image_auroc']:.3f}"


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = load_hybrid_run(args.run, "rebuilds a hybrid's anomaly branch")
    config, train, val = rebuild_split(run, args.run, args.data, args.labeled_defects, args.seed)
    normal_train = [image for image, mask in zip(train.images, train.masks, strict=True) if not mask.any()]
    types = {t for t in args.only_types.split(",") if t}
    test = load_images_with_masks(
        [
            s
            for s in load_labeled_set(args.test).samples
            if not s.defective or not types or types & set(s.defect_types)
        ]
    )
    test_types = [s.defect_types for s in test.samples]

    results = []
    print(
        "| neighbour tiles | bank rows | blur | context | pixel weight | fused | anomaly branch alone | weakest type (fused) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    anomaly = run.model.anomaly
    for neighbours, bank_size, blur, context, pixels in settings(args, anomaly.context, anomaly.pixel_weight):
        model = copy.deepcopy(run.model)
        if blur is not None:  # the head takes its smoothing from the per-source default
            anomaly_module.DEFAULT_BLUR[model.anomaly.source] = blur
        predictor = predictor_of(run, model)
        setting = replace(
            config,
            neighbour_tiles=neighbours,
            bank_size=bank_size,
            anomaly_features=model.anomaly.source,
            anomaly_stride=model.anomaly.stride,
            anomaly_context=context,
            anomaly_pixel_weight=pixels,
        )
        add_anomaly_branch(
            model, predictor, normal_train, val, setting, run.mean, run.std, torch.device("cpu")
        )
        # Fused per tile, as the model's forward does, before the tiles are blended: fusing the blended
        # branch maps instead is not the served map wherever tiles overlap.
        maps = [
            predictor.predict_outputs(image, partial(fused_and_branches, model))[::2] for image in test.images
        ]
        scored = {
            "fused": metrics_by_group([f for f, _ in maps], test.masks, test_types, run.thresholds),
            "anomaly": metrics_by_group([a for _, a in maps], test.masks, test_types, run.thresholds),
        }
        per_type = scored["fused"]["per_defect_type"]
        weakest = min(per_type, key=lambda t: per_type[t]["pixel_auroc"])
        print(
            f"| {neighbours} | {bank_size} | {model.anomaly.config['blur_sigma']:g} | {context} | {pixels:g} | {cells(scored['fused'])} "
            f"| {cells(scored['anomaly'])} | {weakest} {cells(per_type[weakest])} |",
            flush=True,
        )
        results.append(
            {
                "neighbour_tiles": neighbours,
                "bank_size": bank_size,
                "blur": model.anomaly.config["blur_sigma"],
                "context": context,
                "pixel_weight": pixels,
                "fusion_weight": float(model.fusion_weight),
                **scored,
            }
        )
    write_results(args, "anomaly_bank", results)


if __name__ == "__main__":
    main()
