"""What the point-level loss buys: frozen-feature dense probes after equal pretraining budgets.

Generates demo data, pretrains one backbone per objective (densedino, densedino-crr, dino) for the
same number of steps with the same views and batch, then probes each of them and a random init with
the same linear and nearest-neighbour probes (training/probe.py). Prints a table and writes JSON.

    python tests/bench/bench_dense_probe.py --steps 600 --device cuda --out runs/probe-study
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.data.demo import generate_demo_data  # noqa: E402
from training.data.textures import UFOAI_TEXTURE_ARCHIVE  # noqa: E402
from training.pretrain import run_pretrain  # noqa: E402
from training.pretrain_config import PretrainConfig  # noqa: E402
from training.probe import dense_probe  # noqa: E402

OBJECTIVES = ("densedino", "densedino-crr", "dino")


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not (data / "labeled").is_dir():
        archive = args.textures if args.textures.exists() else None
        print(generate_demo_data(data, seed=args.seed, count=args.unlabeled, image_size=256,
                                 labeled_count=args.labeled, texture_archive=archive).describe(), flush=True)
    backbones = {"random": f"random:{args.arch}"}
    timings: dict[str, float] = {}
    for objective in args.objectives:
        run = args.out / f"pretrain-{objective}"
        start = time.perf_counter()
        run_pretrain(PretrainConfig(
            data=data / "unlabeled", out=run, arch=args.arch, objective=objective, steps=args.steps,
            batch_size=args.batch_size, local_crops=args.local_crops, points=args.points,
            device=args.device, workers=args.workers, seed=args.seed, compile=args.compile,
            progress=False, checkpoint_every=args.steps,
        ))
        timings[objective] = time.perf_counter() - start
        print(f"pretrained {objective}: {args.steps} steps in {timings[objective]:.0f} s", flush=True)
        backbones[objective] = str(run)
    results = {}
    for name, spec in backbones.items():
        result = dense_probe(spec, data / "labeled", image_size=224, steps=args.probe_steps,
                             seed=args.seed, device=args.device)
        results[name] = asdict(result) | {"pretrain_seconds": timings.get(name, 0.0)}
        print(f"{name:14s} linear AUROC {result.linear_pixel_auroc:.4f} AUPRO {result.linear_aupro:.4f} | "
              f"NN AUROC {result.nn_pixel_auroc:.4f} AUPRO {result.nn_aupro:.4f}", flush=True)
    report = {"config": {k: str(v) for k, v in vars(args).items()}, "results": results}
    (args.out / "dense_probe.json").write_text(json.dumps(report, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/probe-study"))
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--points", type=int, default=2)
    parser.add_argument("--probe-steps", type=int, default=300)
    parser.add_argument("--unlabeled", type=int, default=2400)
    parser.add_argument("--labeled", type=int, default=360)
    parser.add_argument("--textures", type=Path, default=UFOAI_TEXTURE_ARCHIVE)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    main()
