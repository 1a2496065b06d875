"""What the point-level loss buys: frozen-feature dense probes after equal pretraining budgets.

Generates demo data, pretrains one backbone per objective (densedino, densedino-crr, dino) for the
same number of steps with the same views and batch, then probes each of them and a random init of
the same architecture (same ViT settings, so the comparison isolates the training) with the same
linear and nearest-neighbour probes (benchmarks/probe.py) at each probe size. Prints a table, each
run's collapse verdict, and writes OUT/dense_probe.json; `--json PATH` also writes the printed rows with
the settings, as every accuracy bench does.

    python -m benchmarks.accuracy.dense_probe --steps 600 --device cuda --out runs/probe-study
    # CPU scale (the demo model's ViT):
    python -m benchmarks.accuracy.dense_probe --out runs/probe-cpu --arch test_vit3 --device cpu --workers 2 \\
        --unlabeled 300 --labeled 180 --global-size 128 --local-size 64 --points 4 --batch-size 32 \\
        --prototypes 4096 --head-hidden-dim 512 --steps 300 --layer-scale-init 1.0 --lr 2e-3 --teacher-momentum 0.99 \\
        --probe-sizes 128,256 --seed 7
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.probe import dense_probe
from benchmarks.results_json import add_json_option, write_results
from training.data.demo import generate_demo_data
from training.data.textures import UFOAI_TEXTURE_ARCHIVE
from training.models.backbone import create_vit, save_backbone
from training.pretrain import run_pretrain
from training.pretrain_config import PretrainConfig

OBJECTIVES = ("densedino", "densedino-crr", "dino")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not (data / "labeled").is_dir():
        archive = args.textures if args.textures.exists() else None
        print(
            generate_demo_data(
                data,
                seed=args.seed,
                count=args.unlabeled,
                image_size=256,
                labeled_count=args.labeled,
                texture_archive=archive,
            ).describe(),
            flush=True,
        )
    backbones = {"random": str(save_random_backbone(args))}
    timings: dict[str, float] = {}
    verdicts: dict[str, list[str]] = {}
    for objective in args.objectives:
        config = pretrain_config(args, data / "unlabeled", objective)
        start = time.perf_counter()
        result = run_pretrain(config)
        timings[objective] = time.perf_counter() - start
        verdicts[objective] = list(result.collapse_warnings)
        print(f"pretrained {objective}: {args.steps} steps in {timings[objective]:.0f} s", flush=True)
        for warning in result.collapse_warnings:
            print(f"  warning: {warning}", flush=True)
        backbones[objective] = str(config.out)
    results: dict[str, dict[str, dict]] = {}
    rows = []
    for size in args.probe_sizes:
        results[str(size)] = {}
        for name, spec in backbones.items():
            probe = dense_probe(
                spec,
                data / "labeled",
                image_size=size,
                steps=args.probe_steps,
                seed=args.seed,
                device=args.device,
            )
            results[str(size)][name] = asdict(probe) | {
                "pretrain_seconds": timings.get(name, 0.0),
                "collapse_warnings": verdicts.get(name, []),
            }
            rows.append({"probe_size": size, "name": name, **results[str(size)][name]})
            print(
                f"{size:4d} px  {name:14s} linear AUROC {probe.linear_pixel_auroc:.4f} AUPRO {probe.linear_aupro:.4f} | "
                f"NN AUROC {probe.nn_pixel_auroc:.4f} AUPRO {probe.nn_aupro:.4f}",
                flush=True,
            )
    report = {"config": {k: str(v) for k, v in vars(args).items()}, "results": results}
    (args.out / "dense_probe.json").write_text(json.dumps(report, indent=2) + "\n")
    write_results(args, "dense_probe", rows)


def pretrain_config(args: argparse.Namespace, unlabeled: Path, objective: str) -> PretrainConfig:
    """The same budget, views and ViT for every objective; only the objective differs."""
    return PretrainConfig(
        data=unlabeled,
        out=args.out / f"pretrain-{objective}",
        arch=args.arch,
        objective=objective,
        steps=args.steps,
        batch_size=args.batch_size,
        global_size=args.global_size,
        local_size=args.local_size,
        local_crops=args.local_crops,
        points=args.points,
        num_prototypes=args.prototypes,
        head_hidden_dim=args.head_hidden_dim,
        layer_scale_init=args.layer_scale_init,
        lr=args.lr,
        momentum=(args.teacher_momentum, 1.0),
        photometric=args.photometric,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        compile=args.compile,
        progress=False,
        checkpoint_every=args.steps,
    )


def save_random_backbone(args: argparse.Namespace) -> Path:
    """A random init built exactly as the pretraining runs build theirs (LayerScale included)."""
    path = args.out / "random" / "backbone.pt"
    path.parent.mkdir(exist_ok=True)
    vit_kwargs = pretrain_config(args, args.out, "dino").vit_kwargs
    torch.manual_seed(args.seed)
    model = create_vit(args.arch, img_size=args.global_size, model_kwargs=vit_kwargs)
    save_backbone(
        path, model, arch=args.arch, img_size=args.global_size, objective="random", model_kwargs=vit_kwargs
    )
    return path


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/probe-study"))
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--points", type=int, default=2)
    parser.add_argument("--prototypes", type=int, default=65536)
    parser.add_argument("--head-hidden-dim", type=int, default=2048)
    parser.add_argument("--layer-scale-init", type=float, default=None)
    parser.add_argument("--lr", type=float, default=5e-4, help="per 256 images, as in pretrain")
    parser.add_argument("--teacher-momentum", type=float, default=0.996)
    parser.add_argument("--photometric", default="dino", help="dino or inspection, as in pretrain")
    parser.add_argument("--probe-steps", type=int, default=300)
    parser.add_argument(
        "--probe-sizes", type=parse_sizes, default=[224], help="comma-separated, e.g. 128,256"
    )
    parser.add_argument("--unlabeled", type=int, default=2400)
    parser.add_argument("--labeled", type=int, default=360)
    parser.add_argument("--textures", type=Path, default=UFOAI_TEXTURE_ARCHIVE)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
