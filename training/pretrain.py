"""Self-supervised pretraining (DenseDINO, its coding-rate variant, or the DINO baseline).

`run_pretrain(config)` trains a student ViT against its EMA teacher on multi-crop views of a folder
of images and writes the run folder:

    RUN/config.json      resolved settings
    RUN/metrics.jsonl    one line per logged step (losses, lr, collapse monitors, images/s)
    RUN/checkpoint.pt    full training state for --resume (every N steps, at the end, on Ctrl-C)
    RUN/backbone.pt      the teacher's ViT, read by `training.models.backbone.load_backbone`

Launched by `torchrun` it trains data-parallel (one process per GPU), rank 0 writing the files.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import CHECKPOINT_FILE, read_checkpoint, restore_checkpoint, save_checkpoint
from training.data.device_views import EncodedBatch, collate_encoded
from training.data.images import SkipCounter, list_images
from training.data.photometric import PHOTOMETRIC_RECIPES
from training.data.pretrain_dataset import MultiCropDataset, ResumableSampler, collate_views
from training.data.view_batch import ViewBatch
from training.distributed import (
    DistributedContext,
    all_reduce_mean,
    barrier,
    init_distributed,
    shutdown_distributed,
)
from training.errors import UserError
from training.losses import CodingRateDistillationLoss, DenseDINOLoss
from training.models.backbone import BACKBONE_FILE, create_vit, save_backbone
from training.models.heads import DINOHead, ProjectionHead
from training.models.self_distillation import SelfDistillationNet, compile_blocks, make_teacher
from training.monitors import (
    METRICS_FILE,
    MetricsLog,
    Throughput,
    collapse_warnings,
    effective_rank,
    monitor_readings,
    read_metrics,
)
from training.pretrain_config import PretrainConfig
from training.pretrain_step import StepParts, StepSettings, train_step
from training.progress import progress_bar
from training.schedules import TrainingSchedules

log = logging.getLogger("training.pretrain")


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    skipped_images: int
    collapse_warnings: tuple[str, ...] = ()
    monitor_readings: str = ""  # what the collapse monitors read at the end (see `monitors.monitor_readings`)

    def verdict(self) -> str:
        """One line for a healthy run ("no collapse (…)"); the warnings speak for a collapsed one."""
        if self.collapse_warnings:
            return ""
        return (
            f"no collapse ({self.monitor_readings})"
            if self.monitor_readings
            else "no collapse monitor was logged"
        )


def build_networks(config: PretrainConfig) -> tuple[SelfDistillationNet, SelfDistillationNet]:
    """Student (with stochastic depth) and its teacher copy (no stochastic depth, eval mode)."""
    backbone = create_vit(
        config.arch,
        img_size=config.global_size,
        drop_path_rate=config.drop_path,
        model_kwargs=config.vit_kwargs,
    )
    dim = backbone.embed_dim

    def head(prototypes: int) -> nn.Module:
        if config.objective == "densedino-crr":
            return ProjectionHead(dim, config.projection_dim, config.head_hidden_dim)
        return DINOHead(dim, prototypes, config.head_hidden_dim, config.projection_dim)

    student = SelfDistillationNet(
        backbone,
        head(config.num_prototypes),
        head(config.point_prototype_count) if config.dense else None,
        learned_ref_content=config.learned_ref_content,
        reference_attention=config.reference_attention,
    )
    teacher = make_teacher(student)
    for block in teacher.backbone.blocks:  # the teacher runs deterministically
        block.drop_path1 = block.drop_path2 = nn.Identity()
    return student, teacher.eval()


def build_loss(config: PretrainConfig) -> nn.Module:
    if config.objective == "densedino-crr":
        return CodingRateDistillationLoss(use_points=True, alpha=config.alpha, eps_sq=config.eps_sq)
    return DenseDINOLoss(
        config.num_prototypes,
        point_prototypes=config.point_prototype_count,
        use_points=config.dense,
        alpha=config.alpha,
        student_temp=config.student_temp,
        teacher_temp=config.teacher_temp,
        center_momentum=config.center_momentum,
    )


def build_optimizer(student: nn.Module, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; biases, norms, tokens and position embeddings are not weight-decayed."""
    decayed, plain = [], []
    for name, parameter in student.named_parameters():
        if not parameter.requires_grad:
            continue
        is_plain = parameter.ndim <= 1 or name.endswith((".bias", "pos_embed", "cls_token", "reg_token"))
        (plain if is_plain else decayed).append(parameter)
    groups = [{"params": decayed, "decayed": True}, {"params": plain, "weight_decay": 0.0, "decayed": False}]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


def build_loader(config: PretrainConfig, ctx: DistributedContext) -> tuple[DataLoader, ResumableSampler]:
    paths = list_images(config.data)
    dataset = MultiCropDataset(paths, config.multicrop(), config.seed, decode_on=config.decode)
    collate = (
        collate_views if config.decode == "workers" else partial(collate_encoded, config=config.multicrop())
    )
    sampler = ResumableSampler(
        len(dataset), batch_size=config.batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=config.seed
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        num_workers=config.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers > 0 else None,
    )
    return loader, sampler


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one step on one process (augmentation draws, stochastic depth).

    Every process draws its own numbers (with one shared seed, all ranks would augment their
    batches identically), and a resumed run draws exactly what the uninterrupted run drew on
    every rank, although the checkpoint only holds rank 0's generator states.
    """
    return int(np.random.SeedSequence((seed, rank, step)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _batches(
    loader: DataLoader, sampler: ResumableSampler, start_step: int
) -> Iterator[ViewBatch | EncodedBatch]:
    """The batch stream from `start_step` on, epoch after epoch."""
    epoch, batch_in_epoch = divmod(start_step, sampler.batches_per_epoch)
    while True:
        sampler.set_position(epoch, batch_in_epoch)
        yield from loader
        epoch, batch_in_epoch = epoch + 1, 0


class _StopRequest:
    """Turns Ctrl-C into a flag checked between steps, so a checkpoint is never taken mid-step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> Self:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


class Trainer:
    """Holds the built pieces of a run and drives the loop."""

    def __init__(self, config: PretrainConfig, ctx: DistributedContext) -> None:
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)  # the same initial weights on every rank (teacher included)
        self.student_net, self.teacher_net = build_networks(config)
        self.student_net.to(ctx.device).train()
        self.teacher_net.to(ctx.device)
        self.loss = build_loss(config).to(ctx.device)
        self.optimizer = build_optimizer(self.student_net, config.lr, ctx.device)
        self.loader, self.sampler = build_loader(config, ctx)
        self.total_steps = config.steps or config.epochs * self.sampler.batches_per_epoch
        global_batch = config.batch_size * ctx.world_size
        self.schedules = TrainingSchedules.build(
            total_steps=self.total_steps,
            warmup_steps=int(config.warmup * self.total_steps),
            lr=config.lr * global_batch / 256,
            min_lr=config.min_lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
        )
        self.parts = self._step_parts()
        self.skips = SkipCounter()
        self.metrics = MetricsLog(config.out / METRICS_FILE)

    def _step_parts(self) -> StepParts:
        if self.config.compile:
            compile_blocks(self.student_net)
            compile_blocks(self.teacher_net)
        student: nn.Module = self.student_net
        if self.ctx.world_size > 1:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            student = DistributedDataParallel(student, device_ids=device_ids)
        return StepParts(
            student=student,
            student_net=self.student_net,
            teacher=self.teacher_net,
            loss=self.loss,
            optimizer=self.optimizer,
            device=self.ctx.device,
            dense=self.config.dense,
            clip_grad=self.config.clip_grad,
            photometric=PHOTOMETRIC_RECIPES[self.config.photometric],
        )

    def _stateful(self) -> dict[str, nn.Module]:
        return {"student": self.student_net, "teacher": self.teacher_net, "loss": self.loss}

    def resume(self) -> int:
        payload = read_checkpoint(self.config.out / CHECKPOINT_FILE)
        self.config.check_resumable_from(payload["config"])
        return restore_checkpoint(payload, modules=self._stateful(), optimizer=self.optimizer)

    def settings(self, step: int) -> StepSettings:
        return StepSettings(
            lr=float(self.schedules.lr[step]),
            weight_decay=float(self.schedules.weight_decay[step]),
            momentum=float(self.schedules.momentum[step]),
            freeze_prototypes=step < self.sampler.batches_per_epoch,
        )

    def save(self, step: int) -> None:
        if self.ctx.is_main:
            save_checkpoint(
                self.config.out / CHECKPOINT_FILE,
                step=step,
                modules=self._stateful(),
                optimizer=self.optimizer,
                config=self.config.to_json(),
            )
            save_backbone(
                self.config.out / BACKBONE_FILE,
                self.teacher_net.backbone,
                arch=self.config.arch,
                img_size=self.config.global_size,
                objective=self.config.objective,
                model_kwargs=self.config.vit_kwargs,
            )
        barrier()

    def train(self, start_step: int) -> int:
        """Run from `start_step` to the end (or a Ctrl-C); returns the number of completed steps."""
        config, step = self.config, start_step
        throughput = Throughput()
        bar = progress_bar(
            self.total_steps,
            "pretraining",
            unit="step",
            initial=start_step,
            enabled=self.ctx.is_main and config.progress,
        )
        batches = _batches(self.loader, self.sampler, start_step)
        with _StopRequest() as stop:
            while step < self.total_steps:
                batch = next(batches).to(self.ctx.device)  # decodes here with --decode device
                self._count_skipped(batch.skipped)
                torch.manual_seed(step_seed(config.seed, self.ctx.rank, step))
                logs, teacher_features = train_step(self.parts, batch, self.settings(step))
                step += 1
                throughput.add(batch.batch_size * self.ctx.world_size)
                bar.update(1)
                if step % config.log_every == 0 or step == self.total_steps:
                    self._log(step, logs, teacher_features, throughput.rate(), bar)
                if step % config.checkpoint_every == 0 and step < self.total_steps:
                    self.save(step)
                if self._should_stop(stop, step):
                    self.save(step)
                    bar.close()
                    raise KeyboardInterrupt(f"interrupted after step {step}; checkpoint saved")
        bar.close()
        self.save(step)
        return step

    def _count_skipped(self, paths: list[str]) -> None:
        """Record unreadable files once each (every epoch meets them again)."""
        if not paths:
            return
        known = {str(p) for p in self.skips.skipped}
        for path in dict.fromkeys(paths):
            if path not in known:
                self.skips.add(Path(path))

    def _should_stop(self, stop: _StopRequest, step: int) -> bool:
        if self.ctx.world_size == 1:
            return stop.requested
        if step % self.config.log_every:  # ranks agree on stopping only where they sync anyway
            return False
        flag = torch.tensor(float(stop.requested), device=self.ctx.device)
        return bool(all_reduce_mean(flag).item() > 0)

    def _log(
        self, step: int, logs: dict[str, torch.Tensor], teacher_features: torch.Tensor, rate: float, bar: tqdm
    ) -> None:
        values = {name: float(all_reduce_mean(value.float()).item()) for name, value in logs.items()}
        if not self.ctx.is_main:
            return
        settings = self.settings(step - 1)
        record = {
            "step": step,
            "lr": settings.lr,
            "weight_decay": settings.weight_decay,
            "momentum": settings.momentum,
            "images_per_s": rate,
            **values,
            "effective_rank": effective_rank(teacher_features),
        }
        self.metrics.write(record)
        bar.set_postfix(
            loss=f"{values['loss']:.4f}", img_s=f"{rate:.0f}", erank=f"{record['effective_rank']:.1f}"
        )


def run_collapse_warnings(config: PretrainConfig) -> list[str]:
    """The collapse monitors' verdict on the run in `config.out` (see `monitors.collapse_warnings`)."""
    return collapse_warnings(
        read_metrics(config.out / METRICS_FILE),
        prototypes=_prototype_counts(config),
        projection_dim=config.projection_dim,
    )


def run_monitor_readings(config: PretrainConfig) -> str:
    """What the collapse monitors of the run in `config.out` read (see `monitors.monitor_readings`)."""
    return monitor_readings(
        read_metrics(config.out / METRICS_FILE),
        prototypes=_prototype_counts(config),
        projection_dim=config.projection_dim,
    )


def _prototype_counts(config: PretrainConfig) -> dict[str, int]:
    """Prototype count per DINO level of the objective; none for the coding-rate objective."""
    prototypes: dict[str, int] = {}
    if config.objective != "densedino-crr":
        prototypes["image"] = config.num_prototypes
        if config.dense:
            prototypes["point"] = config.point_prototype_count
    return prototypes


# The files a pretraining run writes into its folder; an earlier run's are replaced only on request.
RUN_FILES = ("config.json", METRICS_FILE, CHECKPOINT_FILE, BACKBONE_FILE)


def claim_run_folder(config: PretrainConfig, *, remove: bool = True) -> None:
    """Refuse to start over an earlier run in `config.out` unless `--resume` or `--overwrite` says so.

    Without this a new run silently replaced the old backbone and checkpoint and appended its
    metrics to the old run's metrics.jsonl. With `overwrite`, the earlier run's files are removed.

    Raises:
        UserError: `out` holds a run and neither flag was given, or `out` is a file.
    """
    if config.out.exists() and not config.out.is_dir():
        raise UserError(f"--out {config.out} is a file; give a folder for the run")
    if config.resume:
        return
    earlier = [name for name in RUN_FILES if (config.out / name).exists()]
    if not earlier:
        return
    if not config.overwrite:
        raise UserError(
            f"{config.out} already holds a pretraining run ({', '.join(earlier)}); add --resume to continue it, "
            "--overwrite to replace it, or give another --out"
        )
    for name in earlier if remove else ():
        (config.out / name).unlink(missing_ok=True)


def run_pretrain(config: PretrainConfig) -> PretrainResult:
    """Train and write the run folder; see the module docstring.

    Raises:
        UserError: Bad data folder, settings, or an unresumable checkpoint.
        KeyboardInterrupt: After Ctrl-C, once the checkpoint is saved.
    """
    ctx = init_distributed(config.device)
    try:
        claim_run_folder(config, remove=ctx.is_main)
        if ctx.is_main:
            config.out.mkdir(parents=True, exist_ok=True)
        barrier()
        trainer = Trainer(config, ctx)
        start_step = trainer.resume() if config.resume else 0
        if ctx.is_main:
            config.write(config.out / "config.json")
        steps = trainer.train(start_step)
        if ctx.is_main and trainer.skips.skipped:
            log.warning(trainer.skips.summary())
        warnings = run_collapse_warnings(config) if ctx.is_main else []
        readings = run_monitor_readings(config) if ctx.is_main else ""
        return PretrainResult(config.out, steps, len(trainer.skips.skipped), tuple(warnings), readings)
    finally:
        shutdown_distributed()
