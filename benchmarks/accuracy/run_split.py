"""Shared by the benches that re-score a trained hybrid run: its training split rebuilt, its maps per tile."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.finetune import (
    FinetuneConfig,
    LabeledImages,
    load_images_with_masks,
    select_samples,
    split_train_val,
)
from training.models.hybrid import InspectionModel
from training.predictor import TorchPredictor, default_overlap
from training.runs import RunModel, load_run


def run_split_parser(doc: str | None) -> argparse.ArgumentParser:
    """A bench's parser with the options that name a run and rebuild its split (as given to finetune)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a hybrid finetune run folder")
    parser.add_argument("--data", type=Path, required=True, help="the labeled folder the run was trained on")
    parser.add_argument("--labeled-defects", type=int, default=None, help="as given to finetune")
    parser.add_argument("--seed", type=int, default=0, help="as given to finetune")
    parser.add_argument("--test", type=Path, required=True, help="labeled folder to score on")
    return parser


def load_hybrid_run(run_dir: Path, purpose: str) -> RunModel:
    """The run at `run_dir`; exits with a message unless it is a hybrid (what `purpose` needs)."""
    run = load_run(run_dir)
    if run.model.kind != "hybrid":
        raise SystemExit(f"{run_dir} is a {run.model.kind} run; this bench {purpose}")
    return run


def predictor_of(run: RunModel, model: InspectionModel | None = None) -> TorchPredictor:
    """Whole-frame prediction with `model` (default: the run's own) at the run's tile and normalisation."""
    return TorchPredictor(
        run.model if model is None else model,
        tile=run.tile,
        overlap=default_overlap(run.tile),
        mean=run.mean,
        std=run.std,
    )


def rebuild_split(
    run: RunModel, run_dir: Path, data: Path, labeled_defects: int | None, seed: int
) -> tuple[FinetuneConfig, LabeledImages, LabeledImages]:
    """The run's finetune config (data, labels per line, seed as given to finetune) and its train/val split."""
    config = FinetuneConfig(
        backbone="", data=data, out=run_dir, image_size=run.tile, labeled_defects=labeled_defects, seed=seed
    )
    train_samples, val_samples = split_train_val(select_samples(config), config.val_fraction, config.seed)
    return config, load_images_with_masks(train_samples), load_images_with_masks(val_samples)


def fused_and_branches(model: InspectionModel, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's fused map (what its forward returns), its head and its anomaly branch, in one pass."""
    p_head, p_anomaly = model.branch_probabilities(tiles)
    return model.fuse(p_head, p_anomaly), p_head, p_anomaly
