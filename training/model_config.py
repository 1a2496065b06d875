"""Every setting of a `finetune` and of a `fit-normal` run: default, help text and check, declared once.

`train-pipeline finetune` and `fit-normal` take their flags' defaults and help from these classes and
validate by building them (see `training.run_config`); each run writes the resolved config to its
`config.json`. Defaults are the recommended settings (the measured recipe: 128 px tiles, the GPU when
there is one). Defaults that depend on another setting (the anomaly context and pixel weight on the
features, the image score's k on the tile) are resolved at construction, so the saved config names
the values used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from training.errors import UserError
from training.run_config import help_of, setting

# The recall the image threshold is chosen for unless told otherwise (`training.decision` names it in
# its rule). Declared here, not there: the CLI reads these defaults and must not wait for that module.
DEFAULT_TARGET_RECALL = 0.95

# k of the image score as a share of the tile's area: a few dozen pixels at the usual tiles, below the
# smallest defect the synthesis draws, well above one hot pixel.
TOP_PIXELS_TILE_SHARE = 1 / 1024


def default_top_pixels(tile: int) -> int:
    """k of the image score for a model with `tile`-pixel tiles."""
    return max(1, round(TOP_PIXELS_TILE_SHARE * tile * tile))


def check_target_recall(target: float) -> None:
    """Turn a bad `--target-recall` into the CLI's one-line error."""
    if not 0.0 < target <= 1.0:
        raise UserError(f"--target-recall must be in (0, 1], got {target}")


@dataclass(frozen=True, kw_only=True)
class ModelRunConfig:
    """The settings finetune and fit-normal share (each verb adds its own `data`, `batch_size` and more)."""

    backbone: str = setting(help="Pretrain run folder, backbone.pt, or random:<timm arch>.")
    out: Path = setting(help="Run folder to write (model, thresholds, metrics, config.json).")
    # The tile size the accuracies of docs/BENCHMARKS.md §1-§2 were measured at (larger tiles measured worse).
    image_size: int = setting(
        128, help="Tile side in pixels (the model's input size; the measured recipe is 128)."
    )
    batch_size: int = setting(8, help="Tiles per step.")
    bank_size: int = setting(2048, help="Memory-bank rows a query is compared with.")
    neighbour_tiles: int = setting(
        4,
        help="Score each tile against the banks of its N most similar normal tiles "
        "(0: one bank for all tiles).",
    )
    target_recall: float = setting(
        DEFAULT_TARGET_RECALL,
        help=(
            "The image threshold catches this share of validation defects (real ones plus synthetic ones drawn on "
            "defect-free validation images); the false-alarm rate it costs is measured and stored in the bundle."
        ),
    )
    image_top_pixels: int | None = setting(
        None,
        help="k of the image score (the mean of the k hottest pixels). Default: about 1/1024 of the tile's area.",
    )
    device: str = setting("auto", help="auto (CUDA when present, else the CPU), cuda or cpu.")
    seed: int = setting(0, help="Seed of splits, crops and coreset.")

    def _check_shared(self) -> None:
        """Check the shared settings (messages name the CLI flags) and resolve the image score's k."""
        object.__setattr__(self, "out", Path(self.out))
        for flag, value in (
            ("--image-size", self.image_size),
            ("--batch-size", self.batch_size),
            ("--bank-size", self.bank_size),
            ("--image-top-pixels", self.image_top_pixels),
        ):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        check_target_recall(self.target_recall)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise UserError(f"--device must be cpu, cuda or auto, not {self.device!r}")
        check_anomaly_options(neighbour_tiles=self.neighbour_tiles)
        # Resolved once here, so everything downstream (and the saved run) sees a plain number.
        if self.image_top_pixels is None:
            object.__setattr__(self, "image_top_pixels", default_top_pixels(self.image_size))


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(ModelRunConfig):
    """Settings of `finetune` (the hybrid model: a supervised head fused with a memory-bank branch)."""

    data: Path | tuple[Path, ...] = setting(
        help="Labeled folder (images/ + masks/, or MVTec AD layout); repeat to combine folders."
    )
    steps: int | None = setting(500, help="Optimisation steps (ignored when --epochs is given).")
    epochs: int | None = setting(None, help="Passes of one crop per training image.")
    lr: float = setting(1e-3, help="Head learning rate; unfrozen blocks get --backbone-lr-scale of it.")
    backbone_lr_scale: float = setting(
        0.1, help="Learning rate of the unfrozen backbone blocks, as a share of --lr."
    )
    unfreeze_last: int = setting(2, help="Backbone blocks fine-tuned (0 = frozen).")
    anomaly_branch: bool = setting(True, help="Fuse a zero-label anomaly map (hybrid model).")
    anomaly_features: str = setting(
        "conv", help="conv: the head's encoder at 1/2 resolution (thin defects); vit: patch tokens."
    )
    anomaly_stride: int = setting(
        1, help="Score every Nth feature position (2: 4x cheaper anomaly branch, a little coarser)."
    )
    anomaly_context: int | None = setting(
        None,
        help=(
            "Memory-bank rows also carry the KxK mean and std of the features around them (odd K; 0: off). "
            "Helps large, low-contrast defects. Default: 15 on conv features, 0 on vit."
        ),
    )
    anomaly_pixel_weight: float | None = setting(
        None,
        help=(
            "Memory-bank rows also carry the image's own pixels at this weight (0: off). Sees pale stains and "
            "colour changes that learned features miss. Default: 4 on conv features, 0 on vit."
        ),
    )
    head_context: int | None = setting(
        None,
        help=(
            "The head compares each 1/4-resolution position with the mean and std of the KxK window around it and "
            "with the whole tile (odd K >= 3; 0: off). Helps large, low-contrast defects. Default: 11."
        ),
    )
    copy_paste: float = setting(
        0.0, help="Share of training crops that get one of the labeled defects pasted in (0: off)."
    )
    synthetic_anomalies: float = setting(
        0.0, help="Share of training crops that get a generic synthetic anomaly drawn in (0: off)."
    )
    label_free_steps: int = setting(
        0,
        help=(
            "Fuse a label-free branch instead of the memory bank on the head's own features: a discriminator trained "
            "for this many steps on the defect-free training images with synthetic anomalies, and a memory bank on its "
            "encoder, neither ever trained on a labeled defect (0: off)."
        ),
    )
    labeled_defects: int | None = setting(None, help="Use only N labeled defect images per line.")
    val_fraction: float = setting(
        0.2, help="Share of the labeled images held out to choose fusion and thresholds."
    )

    def __post_init__(self) -> None:
        from training.models.anomaly import default_context, default_pixel_weight
        from training.models.segmentation import default_head_context

        data = (Path(self.data),) if isinstance(self.data, (str, Path)) else tuple(Path(d) for d in self.data)
        object.__setattr__(self, "data", data[0] if len(data) == 1 else data)
        self._check_shared()
        context = default_context(self.anomaly_features, self.anomaly_context)
        pixel_weight = default_pixel_weight(self.anomaly_features, self.anomaly_pixel_weight)
        head_context = default_head_context(self.head_context)
        for name, value in (
            ("anomaly_context", context),
            ("anomaly_pixel_weight", pixel_weight),
            ("head_context", head_context),
        ):
            object.__setattr__(self, name, value)
        self._validate()
        check_anomaly_options(
            self.anomaly_features, self.anomaly_stride, self.neighbour_tiles, context, pixel_weight
        )
        check_head_options(head_context)

    def _validate(self) -> None:
        at_least = {
            "--steps": (self.steps, 1),
            "--epochs": (self.epochs, 1),
            "--unfreeze-last": (self.unfreeze_last, 0),
            "--labeled-defects": (self.labeled_defects, 1),
            "--label-free-steps": (self.label_free_steps, 0),
        }
        for flag, (value, low) in at_least.items():
            if value is not None and value < low:
                raise UserError(f"{flag} must be at least {low}, got {value}")
        for flag, share in (
            ("--copy-paste", self.copy_paste),
            ("--synthetic-anomalies", self.synthetic_anomalies),
        ):
            if not 0.0 <= share <= 1.0:
                raise UserError(f"{flag} must be a share between 0 and 1, got {share}")
        if self.label_free_steps and not self.anomaly_branch:
            raise UserError("--label-free-steps replaces the anomaly branch: drop --no-anomaly-branch")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must lie between 0 and 1, got {self.val_fraction}")
        if self.lr <= 0 or self.backbone_lr_scale < 0:
            raise UserError(
                f"--lr must be positive and --backbone-lr-scale 0 or more, got {self.lr} and "
                f"{self.backbone_lr_scale}"
            )

    @property
    def data_roots(self) -> tuple[Path, ...]:
        return (self.data,) if isinstance(self.data, Path) else tuple(self.data)


@dataclass(frozen=True, kw_only=True)
class FitNormalConfig(ModelRunConfig):
    """Settings of `fit_normal` (zero-label mode: a memory bank of defect-free images)."""

    data: Path = setting(help="Folder of defect-free images (or a labeled folder).")
    holdout_fraction: float = setting(
        0.2, help="Share of the defect-free images held out to calibrate the map and set the thresholds."
    )
    batch_size: int = setting(16, help=help_of(ModelRunConfig, "batch_size"))
    # Chosen on split A and held on the frozen split B (docs/BENCHMARKS.md §1): the discriminator and a
    # bank on its own encoder beat the bank on patch tokens on every ranking metric of both splits.
    discriminator_steps: int = setting(
        100,
        help=(
            "Also train a head on the normal images with synthetic anomalies drawn in, for this many steps, and fuse "
            "it with the memory bank (0: memory bank only)."
        ),
    )
    anomaly_features: str | None = setting(
        None,
        help=(
            "conv: the memory bank reads the discriminator's conv encoder at 1/2 resolution (features trained on "
            "normal images and synthetic anomalies only); vit: the backbone's patch tokens. Default: conv with a "
            "discriminator, vit without."
        ),
    )
    anomaly_context: int | None = setting(None, help=help_of(FinetuneConfig, "anomaly_context"))
    anomaly_pixel_weight: float | None = setting(None, help=help_of(FinetuneConfig, "anomaly_pixel_weight"))

    def __post_init__(self) -> None:
        from training.models.anomaly import default_context, default_pixel_weight

        object.__setattr__(self, "data", Path(self.data))
        self._check_shared()
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UserError(f"--holdout-fraction must lie between 0 and 1, got {self.holdout_fraction}")
        if self.discriminator_steps < 0:
            raise UserError(f"--discriminator-steps must be 0 (off) or more, got {self.discriminator_steps}")
        if self.anomaly_features is None:
            object.__setattr__(self, "anomaly_features", "conv" if self.discriminator_steps else "vit")
        if self.anomaly_features == "conv" and self.discriminator_steps == 0:
            raise UserError(
                "--anomaly-features conv reads the discriminator's encoder: give --discriminator-steps as well"
            )
        context = default_context(self.anomaly_features, self.anomaly_context)
        pixel_weight = default_pixel_weight(self.anomaly_features, self.anomaly_pixel_weight)
        object.__setattr__(self, "anomaly_context", context)
        object.__setattr__(self, "anomaly_pixel_weight", pixel_weight)
        check_anomaly_options(self.anomaly_features, 1, self.neighbour_tiles, context, pixel_weight)


def check_anomaly_options(
    features: str = "vit",
    stride: int = 1,
    neighbour_tiles: int = 0,
    context: int = 0,
    pixel_weight: float = 0.0,
) -> None:
    """The anomaly branch's options, checked before any work (messages name the CLI flags)."""
    from training.models.anomaly import ANOMALY_SOURCES, check_context, check_pixel_weight

    if features not in ANOMALY_SOURCES:
        raise UserError(f"--anomaly-features must be one of {', '.join(ANOMALY_SOURCES)}, not {features!r}")
    if stride < 1:
        raise UserError(f"--anomaly-stride must be at least 1, got {stride}")
    if neighbour_tiles < 0:
        raise UserError(f"--neighbour-tiles must be 0 (one bank) or more, got {neighbour_tiles}")
    try:
        check_context(context)
    except ValueError:
        raise UserError(
            f"--anomaly-context must be 0 (off) or an odd window of at least 3, got {context}"
        ) from None
    try:
        check_pixel_weight(pixel_weight)
    except ValueError:
        raise UserError(f"--anomaly-pixel-weight must be 0 (off) or positive, got {pixel_weight:g}") from None


def check_head_options(head_context: int) -> None:
    """Turn a bad head option into the CLI's one-line error before any data is read."""
    from training.models.segmentation import check_head_context

    try:
        check_head_context(head_context)
    except ValueError as error:
        raise UserError(f"--head-context: {error}") from None
