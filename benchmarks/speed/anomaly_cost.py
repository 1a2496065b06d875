"""What do the texture contexts cost at inference? CPU time per tile of a hybrid run.

Takes a trained hybrid run and times its forward pass (head, anomaly branch and fusion) with the
anomaly head rebuilt for each `--context` window and `--bank-sizes` (rows a query meets), its memory
bank of the run's tile count filled with random rows, and the segmentation head rebuilt for each
`--head-context` window (the run's weights, a random texture-context block): the time depends on the
shapes only, not on the values. Settings alternate within each repeat, so load from other processes hits them alike; the
median is printed, with its ratio to the first setting.

    python -m benchmarks.speed.anomaly_cost --run runs/ms/seed-0/runs/hybrid-runs-pt-insp-k5 \
        --context 0,7 --bank-sizes 2048,1024 [--head-context 0,11]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from training.models.anomaly import AnomalyHead, TileRetrievalScorer
from training.models.hybrid import InspectionModel
from training.models.segmentation import SegmentationHead
from training.runs import load_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a hybrid finetune run folder")
    parser.add_argument("--context", default="0,7", help="context windows to compare (0: the 3x3 mean alone)")
    parser.add_argument(
        "--bank-sizes", default="", help="rows a query meets, e.g. 2048,1024 (default: the run's)"
    )
    parser.add_argument(
        "--head-context",
        default="",
        help="head texture-context windows to compare, e.g. 0,11 (default: the run's)",
    )
    parser.add_argument(
        "--batch", type=int, default=9, help="tiles per forward pass (9: a 256 px frame at 128 px tiles)"
    )
    parser.add_argument(
        "--repeats", type=int, default=6, help="timed passes per setting (the first is dropped)"
    )
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def with_context(model: InspectionModel, context: int, bank_size: int | None) -> InspectionModel:
    """The same model, its anomaly head rebuilt for `context`, a random bank of the run's tile count
    and, per tile, the run's rows or `bank_size / neighbour tiles` (as `fill_memory_bank` sizes it)."""
    old = model.anomaly
    tiles, rows, channels = old.scorer.tile_banks.shape
    neighbours = old.config["neighbour_tiles"]
    rows = rows if bank_size is None else max(1, bank_size // neighbours)
    base = channels // 3 if old.context else channels
    width = base * (3 if context else 1)
    head = AnomalyHead(
        torch.zeros(1, 1),
        old.feature_blocks,
        source=old.source,
        stride=old.stride,
        context=context,
        pixel_weight=old.pixel_weight,
    )  # the run's pixels stay in the rows: they set the width
    head.set_memory_bank(torch.randn(tiles, rows, width), torch.randn(tiles, 2 * width), neighbours)
    return InspectionModel(model.backbone, segmentation=model.segmentation, anomaly=head.eval()).eval()


def with_head_context(model: InspectionModel, window: int) -> InspectionModel:
    """The same model with its segmentation head rebuilt around a `window` texture-context block (0: none)."""
    head = SegmentationHead.from_config(
        model.backbone.embed_dim, {**model.segmentation.config, "context": window}
    )
    head.load_state_dict(model.segmentation.state_dict(), strict=False)  # the block's own weights stay random
    return InspectionModel(model.backbone, segmentation=head.eval(), anomaly=model.anomaly).eval()


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    if run.model.kind != "hybrid" or not isinstance(run.model.anomaly.scorer, TileRetrievalScorer):
        raise SystemExit(f"{args.run} is not a hybrid run with per-tile banks")
    sizes: list[int | None] = [int(b) for b in args.bank_sizes.split(",") if b] or [None]
    heads = [int(w) for w in args.head_context.split(",") if w] or [
        run.model.segmentation.config.get("context", 0)
    ]
    models = {
        (int(c), size, window): with_head_context(with_context(run.model, int(c), size), window)
        for c in args.context.split(",")
        for size in sizes
        for window in heads
    }
    tiles = torch.randn(args.batch, 3, run.tile, run.tile, generator=torch.Generator().manual_seed(0))
    times: dict[tuple[int, int | None, int], list[float]] = {setting: [] for setting in models}
    for _ in range(args.repeats):
        for setting, model in models.items():
            start = time.perf_counter()
            model(tiles)
            times[setting].append((time.perf_counter() - start) / args.batch * 1000.0)
    baseline = statistics.median(next(iter(times.values()))[1:])
    print(
        f"| context | rows per query | head context | ms per {run.tile} px tile ({args.threads} thread(s), "
        f"median of {args.repeats - 1}) | ratio |"
    )
    print("|---|---|---|---|---|")
    for (context, size, window), measured in times.items():
        median = statistics.median(measured[1:])
        rows = "the run's" if size is None else size
        print(f"| {context} | {rows} | {window} | {median:.1f} | {median / baseline:.2f} |")


if __name__ == "__main__":
    main()
