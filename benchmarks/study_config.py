"""The label study's options: its own, and the run configs every model of the study trains from.

Imports no torch, so the study's command line can be built (and `--help` shown) without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from training.errors import UserError
from training.model_config import FinetuneConfig, FitNormalConfig

# Settings of a study's zero-label models that follow its fine-tuning template, so both kinds of model
# are compared at the same tile, on the same tiles' banks, by the same decision rule, device and seed.
# The zero-label model's other settings (its bank size and batch among them) are its own template's.
FOLLOWS_FINETUNE = ("image_size", "neighbour_tiles", "target_recall", "image_top_pixels", "device", "seed")
# Run settings each job fills in: the backbone, training folder and run folder, and a hybrid's labels budget.
PER_JOB = ("backbone", "data", "out", "labeled_defects")


def finetune_template(**settings: Any) -> FinetuneConfig:
    """The fine-tuning settings of every hybrid of a study (those of `PER_JOB` are filled per job)."""
    return FinetuneConfig(backbone="", data=Path(), out=Path(), **settings)


def fit_normal_template(**settings: Any) -> FitNormalConfig:
    """The settings of every zero-label model of a study (`PER_JOB` are filled per job)."""
    return FitNormalConfig(backbone="", data=Path(), out=Path(), **settings)


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Options of `run_study` (mirrors `python -m benchmarks label-study`).

    The models are trained as `train-pipeline finetune` and `fit-normal` train them, from the run
    configs held here: every setting of those verbs, defaults included, reaches every job.

    Attributes:
        backbones: Backbone specs (pretrain run folder, backbone.pt, random:<arch>), one set of rows each.
        data: The labeled folder.
        out: Study folder.
        finetune: The hybrids' fine-tuning settings; its seed is the study's (splits, label picks,
            training), its image size, batch and copy-paste share also train the U-Net.
        fit_normal: The zero-label models' settings; those named in `FOLLOWS_FINETUNE` are taken from
            `finetune` when the study is built.
        labels: Labels budgets: labeled defect images per line.
        held_out_types: Defect types kept out of training for the held-out-type split; empty = no such split.
        test_fraction: Share of each (line, defect type) group that goes to the test split.
        include_unet: Train the from-scratch U-Net baseline.
        include_zero_label: Fit the zero-label mode alone, per backbone.
        unet_steps: Optimisation steps of the U-Net (None: the fine-tuning's steps).
    """

    backbones: tuple[str, ...]
    data: Path
    out: Path
    finetune: FinetuneConfig = field(default_factory=finetune_template)
    fit_normal: FitNormalConfig = field(default_factory=fit_normal_template)
    labels: tuple[int, ...] = (1, 5, 20)
    held_out_types: tuple[str, ...] = ("scratch", "crack")
    test_fraction: float = 0.3
    include_unet: bool = True
    include_zero_label: bool = True
    unet_steps: int | None = None

    def __post_init__(self) -> None:
        shared = {name: getattr(self.finetune, name) for name in FOLLOWS_FINETUNE}
        object.__setattr__(self, "fit_normal", replace(self.fit_normal, **shared))

    @property
    def seed(self) -> int:
        """Seed of the splits, label picks and training."""
        return self.finetune.seed

    @property
    def held_out_budget(self) -> int:
        """The labels budget of the held-out-type split: the middle one of `labels`."""
        return sorted(self.labels)[len(self.labels) // 2]

    def with_seed(self, seed: int, out: Path) -> StudyConfig:
        """The same study drawn with another seed, into `out`."""
        return replace(self, finetune=replace(self.finetune, seed=seed), out=out)


def parse_labels(text: str) -> tuple[int, ...]:
    """'1,5,20' → (1, 5, 20), sorted and without repeats.

    Raises:
        UserError: an empty list, or an entry that is not a positive integer.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise UserError(
            f"--labels must be a comma-separated list of positive integers such as 1,5,20, not {text!r}"
        )
    return tuple(sorted({int(p) for p in parts}))


def parse_types(text: str) -> tuple[str, ...]:
    """'scratch, crack' → ('crack', 'scratch'); an empty text gives ()."""
    return tuple(sorted({p.strip() for p in text.split(",") if p.strip()}))
