"""Every setting of a pretraining run, validated once and written to RUN/config.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from training.data.device_views import DECODE_ON
from training.data.multicrop import MultiCropConfig
from training.data.photometric import PHOTOMETRIC_RECIPES
from training.errors import UserError
from training.models.reference_tokens import REFERENCE_ATTENTION

Objective = Literal["densedino", "densedino-crr", "dino"]
OBJECTIVES: tuple[str, ...] = ("densedino", "densedino-crr", "dino")

# Settings that may differ between a run and its resumption (they do not change the result).
RUNTIME_ONLY = frozenset(
    {"resume", "overwrite", "workers", "device", "checkpoint_every", "log_every", "compile", "progress",
     "reference_attention", "decode"}
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

    data: Path
    out: Path
    arch: str = "vit_small_patch16_224"
    objective: Objective = "densedino"
    global_size: int = 224
    local_size: int = 96
    global_crops: int = 2
    local_crops: int = 4
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    points: int = 2
    batch_size: int = 64
    epochs: int = 100
    steps: int | None = None  # overrides epochs when set
    lr: float = 5e-4  # per 256 images; the peak lr is lr · global batch / 256
    min_lr: float = 1e-6
    warmup: float = 0.1  # fraction of the steps spent warming the lr up
    weight_decay: tuple[float, float] = (0.04, 0.4)
    momentum: tuple[float, float] = (0.996, 1.0)
    clip_grad: float = 3.0
    drop_path: float = 0.1
    alpha: float = 0.5
    num_prototypes: int = 65536
    # The point head's own count (None: num_prototypes). Its logits are [reference tokens, K] per view
    # pair, ~100x the class head's rows, so K there sets much of the step's memory traffic.
    point_prototypes: int | None = None
    projection_dim: int = 256
    head_hidden_dim: int = 2048
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    eps_sq: float = 0.05
    learned_ref_content: bool = False
    reference_attention: str = "split"  # "masked": the same maths with an attention mask (slower)
    decode: str = "workers"  # "device": JPEGs decoded and views cut on the GPU (see data/device_views.py)
    seed: int = 0
    device: str = "auto"
    workers: int = field(default_factory=default_workers)
    checkpoint_every: int = 1000
    log_every: int = 20
    compile: bool = False
    resume: bool = False
    overwrite: bool = False  # replace an earlier run's files in `out` instead of refusing
    progress: bool = True
    # LayerScale's initial value in every block (timm's init_values; None: the architecture's own). A
    # tiny one (test_vit3 has 1e-5) leaves the blocks nearly off for a short run: every image then gets
    # the same class token, and DINO's centering turns the teacher uniform (docs/BENCHMARKS.md §2).
    layer_scale_init: float | None = None
    # Photometric augmentation: "inspection" (colour jitter only, the best hybrid measured on defect
    # types nobody labeled) or "dino" (jitter, grayscale, blur, solarize).
    photometric: str = "inspection"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # ViT overrides (tiny test models)

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.global_scale, self.local_scale = tuple(self.global_scale), tuple(self.local_scale)
        self.weight_decay, self.momentum = tuple(self.weight_decay), tuple(self.momentum)
        self._validate()

    def _validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        positive = {"--global-size": self.global_size, "--local-size": self.local_size, "--batch-size": self.batch_size,
                    "--points": self.points, "--global-crops": self.global_crops, "--epochs": self.epochs,
                    "--checkpoint-every": self.checkpoint_every, "--log-every": self.log_every}
        for flag, value in positive.items():
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
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
            raise UserError("the dense objectives need at least two views (--global-crops 2 or --local-crops ≥ 1)")
        if self.reference_attention not in REFERENCE_ATTENTION:
            raise UserError(
                f"--reference-attention must be one of {', '.join(REFERENCE_ATTENTION)}, not {self.reference_attention!r}"
            )
        if self.resume and self.overwrite:
            raise UserError("choose one of --resume (continue the run) and --overwrite (start it again)")
        if self.photometric not in PHOTOMETRIC_RECIPES:
            raise UserError(f"--photometric must be one of {', '.join(PHOTOMETRIC_RECIPES)}, not {self.photometric!r}")
        if self.decode not in DECODE_ON:
            raise UserError(f"--decode must be one of {', '.join(DECODE_ON)}, not {self.decode!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha must lie in [0, 1], got {self.alpha}")
        for name, (low, high) in (("global", self.global_scale), ("local", self.local_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise UserError(f"the {name} crop scale range must satisfy 0 < low ≤ high ≤ 1, got ({low}, {high})")

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
        return MultiCropConfig(
            global_crops=self.global_crops, global_size=self.global_size, global_scale=self.global_scale,
            local_crops=self.local_crops, local_size=self.local_size, local_scale=self.local_scale,
            points=self.points,
        )

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["data"], values["out"] = str(self.data), str(self.out)
        return values

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
