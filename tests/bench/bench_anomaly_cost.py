"""What does the anomaly branch's texture context cost at inference? CPU time per tile of a hybrid run.

Takes a trained hybrid run and times its forward pass (head, anomaly branch and fusion) with the
anomaly head rebuilt for each `--context` window, its memory bank of the run's shape (tiles x rows
per tile) filled with random rows: the time depends on the shapes only, not on the values. Settings
alternate within each repeat, so load from other processes hits them alike; the median is printed.

    python tests/bench/bench_anomaly_cost.py --run runs/ms/seed-0/runs/hybrid-runs-pt-insp-k5 --context 0,7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.hybrid import InspectionModel, load_run  # noqa: E402
from training.models.anomaly import AnomalyHead, TileRetrievalScorer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a hybrid finetune run folder")
    parser.add_argument("--context", default="0,7", help="context windows to compare (0: the 3x3 mean alone)")
    parser.add_argument("--batch", type=int, default=9, help="tiles per forward pass (9: a 256 px frame at 128 px tiles)")
    parser.add_argument("--repeats", type=int, default=6, help="timed passes per setting (the first is dropped)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def with_context(model: InspectionModel, context: int) -> InspectionModel:
    """The same model, its anomaly head rebuilt for `context`, a random bank of the run's shape."""
    old = model.anomaly
    tiles, rows, channels = old.scorer.tile_banks.shape
    base = channels // 3 if old.context else channels
    width = base * (3 if context else 1)
    head = AnomalyHead(torch.zeros(1, 1), old.feature_blocks, source=old.source, stride=old.stride, context=context)
    head.set_memory_bank(torch.randn(tiles, rows, width), torch.randn(tiles, 2 * width), old.config["neighbour_tiles"])
    return InspectionModel(model.backbone, segmentation=model.segmentation, anomaly=head.eval()).eval()


@torch.no_grad()
def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    if run.model.kind != "hybrid" or not isinstance(run.model.anomaly.scorer, TileRetrievalScorer):
        raise SystemExit(f"{args.run} is not a hybrid run with per-tile banks")
    models = {int(c): with_context(run.model, int(c)) for c in args.context.split(",")}
    tiles = torch.randn(args.batch, 3, run.tile, run.tile, generator=torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {c: [] for c in models}
    for _ in range(args.repeats):
        for context, model in models.items():
            start = time.perf_counter()
            model(tiles)
            times[context].append((time.perf_counter() - start) / args.batch * 1000.0)
    baseline = statistics.median(times[min(times)][1:])
    print(f"| context | ms per {run.tile} px tile ({args.threads} thread(s), median of {args.repeats - 1}) | ratio |")
    print("|---|---|---|")
    for context, measured in times.items():
        median = statistics.median(measured[1:])
        print(f"| {context} | {median:.1f} | {median / baseline:.2f} |")


if __name__ == "__main__":
    main()
