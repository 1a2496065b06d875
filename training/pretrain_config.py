"""Every setting of a pretraining run, validated once and written to RUN/config.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.errors import UserError
from training.run_config import config_json, setting

if TYPE_CHECKING:
    from training.data.multicrop import MultiCropConfig

Objective = Literal["densedino", "densedino-crr", "dino"]
OBJECTIVES: tuple[str, ...] = ("densedino", "densedino-crr", "dino")

# Settings that may differ between a run and its resumption (they do not change the result).
RUNTIME_ONLY = frozenset(
    {
        "resume",
        "overwrite",
        "workers",
        "device",
        "checkpoint_every",
        "log_every",
        "compile",
        "progress",
        "reference_attention",
        "decode",
    }
)
# Data-loading workers by default: one per CPU this process may use, at most this many. PyTorch
# warns when asked for more workers than there are CPUs.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Data-loading worker processes for this machine: min(8, CPUs available to this process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


@dataclass
class PretrainConfig:
    """Settings of `run_pretrain`; the defaults suit one GPU server and ViT-S/16."""

    data: Path = setting(help="Folder tree of unlabeled images.")
    out: Path = setting(help="Run folder (config, metrics, checkpoint.pt, backbone.pt).")
    arch: str = setting("vit_small_patch16_224", help="timm ViT name, e.g. vit_small_patch16_224.")
    objective: Objective = setting(
        "densedino", help="densedino, densedino-crr (coding rate) or dino (image level)."
    )
    global_size: int = setting(224, help="Side of global views (px).")
    local_size: int = setting(96, help="Side of local views (px).")
    global_crops: int = setting(2, help="Global views per image.")
    local_crops: int = setting(4, help="Local views per image.")
    global_scale: tuple[float, float] = setting(
        (0.25, 1.0), help="Area range of a global view, as shares of the image."
    )
    local_scale: tuple[float, float] = setting(
        (0.05, 0.4), help="Area range of a local view, as shares of the image."
    )
    points: int = setting(2, help="Reference points k per (global, view) pair.")
    batch_size: int = setting(64, help="Images per process.")
    epochs: int = setting(100, help="Passes over the data (ignored when --steps is given).")
    steps: int | None = setting(None, help="Total optimization steps (overrides --epochs).")
    lr: float = setting(5e-4, help="Learning rate per 256 images; the peak lr is lr x global batch / 256.")
    min_lr: float = setting(1e-6, help="Learning rate at the end of the cosine schedule.")
    warmup: float = setting(0.1, help="Share of the steps spent warming the learning rate up.")
    weight_decay: tuple[float, float] = setting(
        (0.04, 0.4), help="Weight decay at the start and at the end (cosine)."
    )
    momentum: tuple[float, float] = setting(
        (0.996, 1.0),
        help=(
            "EMA momentum of the teacher at the start (cosine to 1 at the end); it averages about 1/(1 − m) steps, "
            "so a run of a few hundred steps needs 0.99 rather than 0.996."
        ),
    )
    clip_grad: float = setting(3.0, help="Clip the student's gradient norm to this.")
    drop_path: float = setting(0.1, help="Stochastic depth rate of the student ViT.")
    alpha: float = setting(0.5, help="Weight of the image-level loss; 1 − alpha goes to points.")
    num_prototypes: int = setting(65536, help="DINO head prototypes.")
    # The point head's own count (None: num_prototypes). Its logits are [reference tokens, K] per view
    # pair, ~100x the class head's rows, so K there sets much of the step's memory traffic.
    point_prototypes: int | None = setting(None, help="Prototypes of the point head (default: --prototypes).")
    projection_dim: int = setting(256, help="Output width of the heads' projection (before the prototypes).")
    head_hidden_dim: int = setting(2048, help="Hidden width of the heads.")
    student_temp: float = setting(0.1, help="Softmax temperature of the student.")
    teacher_temp: float = setting(0.04, help="Softmax temperature of the teacher.")
    center_momentum: float = setting(0.9, help="EMA momentum of the teacher's centering.")
    eps_sq: float = setting(0.05, help="Distortion ε² of the coding-rate term (densedino-crr).")
    learned_ref_content: bool = setting(
        False, help="Reference tokens carry one learned vector instead of zeros."
    )
    reference_attention: str = setting(
        "split", help="split (fast, flash-eligible) or masked: the same maths two ways."
    )
    decode: str = setting(
        "workers",
        help="workers (OpenCV in the data workers) or device (JPEGs decoded and cropped on the GPU).",
    )
    seed: int = setting(0, help="Seed of weights, views and augmentation.")
    device: str = setting("auto", help="auto (CUDA when present, else the CPU), cuda or cpu.")
    workers: int = setting(default_factory=default_workers, help="Data-loading worker processes.")
    checkpoint_every: int = setting(1000, help="Save the training state every N steps.")
    log_every: int = setting(20, help="Write metrics every N steps.")
    compile: bool = setting(False, help="torch.compile the networks.")
    resume: bool = setting(False, help="Continue the run in --out from its checkpoint.")
    overwrite: bool = setting(
        False, help="Replace the run already in --out (without it, or --resume, an existing run is refused)."
    )
    progress: bool = setting(True, help="Progress bars (on a terminal).")
    # A tiny LayerScale (test_vit3 has 1e-5) leaves the blocks nearly off for a short run: every image then
    # gets the same class token, and DINO's centering turns the teacher uniform (docs/BENCHMARKS.md §3, journal §2).
    layer_scale_init: float | None = setting(
        None,
        help=(
            "Initial LayerScale of the ViT's blocks (default: the architecture's own; give 1.0 for test_vit3, whose "
            "1e-5 cannot learn in a short run)."
        ),
    )
    photometric: str = setting(
        "inspection",
        help=(
            "Augmentation: inspection (colour jitter only: blur and grayscale would teach the features to ignore "
            "scratches and stains) or dino (colour jitter, grayscale, blur, solarize)."
        ),
    )
    # Constructor overrides of the ViT for tests' tiny models; not a flag: --arch names the model on the CLI.
    model_kwargs: dict[str, Any] = setting(default_factory=dict, help="ViT constructor overrides.")

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.global_scale, self.local_scale = tuple(self.global_scale), tuple(self.local_scale)
        self.weight_decay, self.momentum = tuple(self.weight_decay), tuple(self.momentum)
        self._validate()

    def _validate(self) -> None:
        # Imported here: the CLI reads this class for `--help`, which must not wait for torch.
        from training.data.device_views import DECODE_ON
        from training.data.photometric import PHOTOMETRIC_RECIPES
        from training.models.reference_tokens import REFERENCE_ATTENTION

        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        positive = {
            "--global-size": self.global_size,
            "--local-size": self.local_size,
            "--batch-size": self.batch_size,
            "--points": self.points,
            "--global-crops": self.global_crops,
            "--epochs": self.epochs,
            "--checkpoint-every": self.checkpoint_every,
            "--log-every": self.log_every,
            "--prototypes": self.num_prototypes,
            "--projection-dim": self.projection_dim,
            "--head-hidden-dim": self.head_hidden_dim,
        }
        for flag, value in positive.items():
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        above_zero = {
            "--lr": self.lr,
            "--clip-grad": self.clip_grad,
            "--student-temp": self.student_temp,
            "--teacher-temp": self.teacher_temp,
            "--eps-sq": self.eps_sq,
        }
        for flag, number in above_zero.items():
            if not number > 0:
                raise UserError(f"{flag} must be positive, got {number}")
        shares = {"--warmup": self.warmup, "--drop-path": self.drop_path}
        for flag, number in shares.items():
            if not 0.0 <= number < 1.0:
                raise UserError(f"{flag} must lie in [0, 1), got {number}")
        if not 0.0 <= self.center_momentum <= 1.0:  # 1: the center never moves (no centering)
            raise UserError(f"--center-momentum must lie in [0, 1], got {self.center_momentum}")
        if self.min_lr < 0 or min(self.weight_decay) < 0:
            raise UserError(
                f"--min-lr and --weight-decay cannot be negative, got {self.min_lr} and {self.weight_decay}"
            )
        if not 0.0 <= self.momentum[0] <= self.momentum[1] <= 1.0:
            raise UserError(f"the teacher momentum must satisfy 0 ≤ start ≤ end ≤ 1, got {self.momentum}")
        if self.layer_scale_init is not None and not self.layer_scale_init > 0:
            raise UserError(f"--layer-scale-init must be positive, got {self.layer_scale_init}")
        if self.point_prototypes is not None and self.point_prototypes < 1:
            raise UserError(f"--point-prototypes must be at least 1, got {self.point_prototypes}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.local_crops < 0 or self.workers < 0:
            raise UserError("--local-crops and --workers cannot be negative")
        if self.objective != "dino" and self.global_crops < 2 and self.local_crops < 1:
            raise UserError(
                "the dense objectives need at least two views (--global-crops 2 or --local-crops ≥ 1)"
            )
        if self.reference_attention not in REFERENCE_ATTENTION:
            raise UserError(
                f"--reference-attention must be one of {', '.join(REFERENCE_ATTENTION)}, not {self.reference_attention!r}"
            )
        if self.resume and self.overwrite:
            raise UserError("choose one of --resume (continue the run) and --overwrite (start it again)")
        if self.photometric not in PHOTOMETRIC_RECIPES:
            raise UserError(
                f"--photometric must be one of {', '.join(PHOTOMETRIC_RECIPES)}, not {self.photometric!r}"
            )
        if self.decode not in DECODE_ON:
            raise UserError(f"--decode must be one of {', '.join(DECODE_ON)}, not {self.decode!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha must lie in [0, 1], got {self.alpha}")
        for name, (low, high) in (("global", self.global_scale), ("local", self.local_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise UserError(
                    f"the {name} crop scale range must satisfy 0 < low ≤ high ≤ 1, got ({low}, {high})"
                )

    @property
    def point_prototype_count(self) -> int:
        return self.point_prototypes or self.num_prototypes

    @property
    def vit_kwargs(self) -> dict[str, Any]:
        """Constructor overrides of the ViT, saved with the backbone so it is rebuilt the same way."""
        if self.layer_scale_init is None:
            return dict(self.model_kwargs)
        return {**self.model_kwargs, "init_values": self.layer_scale_init}

    @property
    def dense(self) -> bool:
        """Whether the objective has a point level (reference tokens)."""
        return self.objective != "dino"

    def multicrop(self) -> MultiCropConfig:
        from training.data.multicrop import MultiCropConfig

        return MultiCropConfig(
            global_crops=self.global_crops,
            global_size=self.global_size,
            global_scale=self.global_scale,
            local_crops=self.local_crops,
            local_size=self.local_size,
            local_scale=self.local_scale,
            points=self.points,
        )

    def to_json(self) -> dict[str, Any]:
        return config_json(self)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def check_resumable_from(self, saved: dict[str, Any]) -> None:
        """Raise if a setting that shapes the result differs from the run being resumed."""
        current = json.loads(json.dumps(self.to_json()))  # compare as JSON: tuples and lists alike
        saved = json.loads(json.dumps(saved))
        names = [f.name for f in fields(self) if f.name not in RUNTIME_ONLY]
        changed = [name for name in names if saved.get(name) != current.get(name)]
        if changed:
            raise UserError(
                f"cannot resume: settings differ from the checkpointed run ({', '.join(changed)}); "
                "use the same flags or a new --out"
            )
