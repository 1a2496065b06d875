"""Which features should the hybrid's anomaly branch compare? A sweep over the head's conv stages.

For a fine-tuned hybrid run, builds a nearest-neighbour memory bank (greedy coreset, the product's
own) from one stage of the segmentation head at a time — trained, and a randomly initialised head of
the same shape — calibrates it on held-out defect-free images, and scores the anomaly map alone and
fused (noisy-OR, weight 1) with the run's head on a test folder. The ViT-token branch the run may
carry is scored too, as the reference. Prints a table; `--json PATH` (or `--out PATH`) also writes its
rows and settings.

    python -m benchmarks.accuracy.anomaly_features \
        --run runs/label-study-cpu-conv/runs/hybrid-runs-demo-bundle-pretrain-k5-seen-types \
        --train runs/label-study-cpu-conv/splits/pool-without-held-out-types \
        --test runs/label-study-cpu-conv/splits/test --only-types scratch,crack --out runs/anomaly-features.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.results_json import add_json_option, write_results
from inspect_svc.engine.tiling import extract_tiles, plan_tiles
from training.data.labeled import load_labeled_set
from training.data.normalisation import normalise_image
from training.data.splits import holdout_split
from training.finetune import load_images_with_masks
from training.metrics import aupro, auroc, image_scores
from training.models.anomaly import AnomalyHead, greedy_coreset
from training.models.segmentation import SegmentationHead, vit_feature_maps
from training.predictor import TorchPredictor, default_overlap
from training.runs import load_run

STAGES = ("enc_full", "enc_half", "enc_quarter", "fuse_quarter", "dec_half", "dec_full")
MAX_ROWS = 60_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="a finetune run folder (hybrid or supervised)"
    )
    parser.add_argument("--train", type=Path, required=True, help="labeled folder the run trained on")
    parser.add_argument("--test", type=Path, required=True, help="labeled folder to score on")
    parser.add_argument(
        "--only-types", default="", help="score only these defect types (+ defect-free images)"
    )
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--bank-size", type=int, default=2048)
    parser.add_argument("--strides", default="1", help="query strides to compare, e.g. 1,2")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser, "--out")
    return parser.parse_args(argv)


class StageFeatures:
    """Captures the outputs of named decoder stages of a segmentation head during a forward pass."""

    def __init__(self, head: SegmentationHead) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        for name in STAGES:
            getattr(head.decoder, name).register_forward_hook(self._keeper(name))

    def _keeper(self, name: str) -> Callable:
        def keep(_module, _inputs, output) -> None:
            self.outputs[name] = output

        return keep


def score(maps: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    labels = np.concatenate([m.ravel() for m in masks])
    return {
        "pixel_auroc": round(auroc(np.concatenate([m.ravel() for m in maps]), labels), 4),
        "aupro": round(float(aupro(maps, masks)), 4),
        "image_auroc": round(auroc(image_scores(maps), np.asarray([m.any() for m in masks])), 4),
    }


def stage_branch(
    run_forward: Callable[[torch.Tensor], None],
    features: StageFeatures,
    stage: str,
    stride: int,
    normal: list[np.ndarray],
    predictor: TorchPredictor,
    args: argparse.Namespace,
) -> AnomalyHead:
    """A calibrated anomaly head on `stage`, built from 80 % of `normal` and calibrated on the rest."""
    bank_idx, calib_idx = holdout_split(len(normal), 0.2, args.seed)
    head = AnomalyHead(torch.zeros(1, 1), (0,), source="conv", stride=stride)
    rows = []
    for index in bank_idx:
        image = normal[index]
        boxes = plan_tiles(image.shape[0], image.shape[1], predictor.tile, 0)
        run_forward(
            torch.from_numpy(
                extract_tiles(normalise_image(image, predictor.mean, predictor.std), boxes, predictor.tile)
            )
        )
        local = head.local_features(features.outputs[stage])
        rows.append(local.permute(0, 2, 3, 1).reshape(-1, local.shape[1]))
    candidates = torch.cat(rows)
    generator = torch.Generator().manual_seed(args.seed)
    candidates = candidates[torch.randperm(len(candidates), generator=generator)[:MAX_ROWS]]
    head.set_memory_bank(candidates[greedy_coreset(candidates, args.bank_size, seed=args.seed)])
    raw = [
        predictor.predict_outputs(normal[i], partial(_raw, run_forward, features, stage, head))[0]
        for i in calib_idx
    ]
    head.calibrate(torch.from_numpy(np.concatenate([r.ravel() for r in raw])))
    return head


def _raw(
    run_forward, features: StageFeatures, stage: str, head: AnomalyHead, tiles: torch.Tensor
) -> torch.Tensor:
    run_forward(tiles)
    return head.raw_score(tiles.shape[-2:], features.outputs[stage])


def _probability(
    run_forward, features: StageFeatures, stage: str, head: AnomalyHead, tiles: torch.Tensor
) -> torch.Tensor:
    return torch.sigmoid((_raw(run_forward, features, stage, head, tiles) - head.center) / head.scale)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    run = load_run(args.run)
    model = run.model.eval()
    if model.segmentation is None:
        raise SystemExit(f"{args.run} has no segmentation head to take features from")
    normal = load_images_with_masks(load_labeled_set(args.train).defect_free).images
    types = {t for t in args.only_types.split(",") if t}
    test_samples = [
        s
        for s in load_labeled_set(args.test).samples
        if not s.defective or not types or types & set(s.defect_types)
    ]
    test = load_images_with_masks(test_samples)
    predictor = TorchPredictor(
        model, tile=run.tile, overlap=default_overlap(run.tile), mean=run.mean, std=run.std
    )
    branches = [predictor.predict_outputs(image, model.branch_probabilities) for image in test.images]
    head_maps = [b[0] for b in branches]
    results: dict[str, dict] = {"head": score(head_maps, test.masks)}
    if model.anomaly is not None:
        results[f"run's anomaly branch ({model.anomaly.source})"] = score(
            [b[1] for b in branches], test.masks
        )
    random_head = SegmentationHead(model.backbone.embed_dim, model.segmentation.feature_blocks).eval()
    for label, head in (("trained", model.segmentation), ("random", random_head)):
        features = StageFeatures(head)

        def run_forward(tiles: torch.Tensor, head: SegmentationHead = head) -> None:
            head(tiles, vit_feature_maps(model.backbone, tiles, head.feature_blocks))

        for stage in args.stages.split(","):
            for stride in (int(s) for s in args.strides.split(",")):
                branch = stage_branch(run_forward, features, stage, stride, normal, predictor, args)
                maps = [
                    predictor.predict_outputs(
                        img, partial(_probability, run_forward, features, stage, branch)
                    )[0]
                    for img in test.images
                ]
                fused = [1 - (1 - h) * (1 - a) for h, a in zip(head_maps, maps, strict=True)]
                name = f"{label} {stage}" + (f" stride {stride}" if stride > 1 else "")
                results[name] = score(maps, test.masks)
                results[f"{name} + head"] = score(fused, test.masks)
                print(f"{name:28s} alone {results[name]}  fused {results[f'{name} + head']}", flush=True)
    print(
        f"\n{len(test.images)} test images ({sum(m.any() for m in test.masks)} defective); "
        "cells: pixel AUROC / AUPRO / image AUROC"
    )
    for name, metrics in results.items():
        print(
            f"{name:32s} {metrics['pixel_auroc']:.3f} / {metrics['aupro']:.3f} / {metrics['image_auroc']:.3f}"
        )
    rows = [{"features": name, **metrics} for name, metrics in results.items()]
    write_results(
        args,
        "anomaly_features",
        rows,
        test_images=len(test.images),
        defective_images=sum(bool(m.any()) for m in test.masks),
    )


if __name__ == "__main__":
    main()
