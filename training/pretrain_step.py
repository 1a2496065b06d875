"""One optimization step of self-distillation: augment, teacher and student forwards, loss, update."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from training.data.photometric import DINO_RECIPE, PhotometricRecipe, augment
from training.data.view_batch import ViewBatch
from training.losses.terms import LossTerms
from training.models.self_distillation import GroupOutputs, SelfDistillationNet, ema_update


@dataclass
class StepParts:
    """What a step touches.

    `student` may be the DDP wrapper of `student_net`. The teacher is never wrapped: it gets no
    gradients, only the EMA update.
    """

    student: nn.Module
    student_net: SelfDistillationNet
    teacher: SelfDistillationNet
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    dense: bool
    clip_grad: float
    photometric: PhotometricRecipe = DINO_RECIPE


@dataclass(frozen=True)
class StepSettings:
    """Per-step values from the schedules."""

    lr: float
    weight_decay: float
    momentum: float
    freeze_prototypes: bool


@dataclass(frozen=True)
class AugmentedViews:
    """Normalized views on the device, view-major: `[G·B, 3, Sg, Sg]`, `[L·B, 3, Sl, Sl]`."""

    globals_: torch.Tensor
    locals_: torch.Tensor
    teacher_points: torch.Tensor  # [G·B, V·k, 2]
    student_points: torch.Tensor  # [V·B, G·k, 2]


def augment_views(batch: ViewBatch, recipe: PhotometricRecipe = DINO_RECIPE) -> AugmentedViews:
    """Photometric augmentation per view kind (first global, other globals, locals), batched."""
    global_views = [augment(crops, recipe.for_global(g)) for g, crops in enumerate(batch.global_crops)]
    local_views = (
        augment(batch.local_crops.flatten(0, 1), recipe.local) if batch.local_crops.shape[0] else None
    )
    empty_locals = batch.global_crops.new_zeros((0, 3, *batch.local_crops.shape[-2:]), dtype=torch.float32)
    return AugmentedViews(
        globals_=torch.cat(global_views),
        locals_=local_views if local_views is not None else empty_locals,
        teacher_points=batch.teacher_points.flatten(0, 1),
        student_points=batch.student_points.flatten(0, 1),
    )


def student_groups(views: AugmentedViews, dense: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Same-size views go through one forward; student views all carry G·k reference tokens."""
    num_global_rows = views.globals_.shape[0]
    points = views.student_points if dense else None
    global_points = points[:num_global_rows] if dense else None
    local_points = points[num_global_rows:] if dense else None
    if views.locals_.shape[0] == 0:
        return [(views.globals_, global_points)]
    if views.locals_.shape[-1] == views.globals_.shape[-1]:
        return [(torch.cat([views.globals_, views.locals_]), points)]
    return [(views.globals_, global_points), (views.locals_, local_points)]


def _stack_outputs(
    outputs: list[GroupOutputs], num_views: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Concatenate group outputs and split the view-major rows into `[views, B, ...]`."""
    cls = torch.cat([o.cls for o in outputs]).unflatten(0, (num_views, -1))
    features = torch.cat([o.features for o in outputs]).unflatten(0, (num_views, -1))
    if outputs[0].points is None:
        return cls, None, features
    points = torch.cat([o.points for o in outputs]).unflatten(0, (num_views, -1))  # [views, B, R, K]
    return cls, points, features


def compute_loss(
    parts: StepParts, views: AugmentedViews, num_globals: int, num_views: int
) -> tuple[LossTerms, torch.Tensor]:
    """Teacher on the global views, student on all views, then the objective. Returns (terms, teacher features)."""
    with torch.no_grad():
        teacher_points = views.teacher_points if parts.dense else None
        teacher_cls, teacher_refs, teacher_features = _stack_outputs(
            parts.teacher([(views.globals_, teacher_points)]), num_globals
        )
    student_cls, student_refs, _ = _stack_outputs(
        parts.student(student_groups(views, parts.dense)), num_views
    )
    if not parts.dense:
        return parts.loss(student_cls, teacher_cls), teacher_features
    batch = student_cls.shape[1]
    # Reference tokens are pair-major: teacher view g holds (j, m), student view j holds (g, m).
    teacher_refs = teacher_refs.reshape(num_globals, batch, num_views, -1, teacher_refs.shape[-1])
    student_refs = student_refs.reshape(num_views, batch, num_globals, -1, student_refs.shape[-1])
    return parts.loss(student_cls, teacher_cls, student_refs, teacher_refs), teacher_features


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def apply_settings(optimizer: torch.optim.Optimizer, settings: StepSettings) -> None:
    for group in optimizer.param_groups:
        group["lr"] = settings.lr
        if group.get("decayed", False):
            group["weight_decay"] = settings.weight_decay


def train_step(
    parts: StepParts, batch: ViewBatch, settings: StepSettings
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step; returns detached logs (device tensors, no host sync) and the teacher's class features."""
    batch = batch.to(parts.device)
    num_globals = batch.global_crops.shape[0]
    num_views = num_globals + batch.local_crops.shape[0]
    views = augment_views(batch, parts.photometric)
    apply_settings(parts.optimizer, settings)
    with _autocast(parts.device):
        terms, teacher_features = compute_loss(parts, views, num_globals, num_views)
    terms.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.student_net.parameters(), parts.clip_grad)
    if settings.freeze_prototypes:
        _drop_prototype_grads(parts.student_net)
    parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    ema_update(parts.teacher, parts.student_net, settings.momentum)
    logs = {"loss": terms.total.detach(), "grad_norm": grad_norm.detach(), **terms.logs}
    return logs, teacher_features[0].detach()


def _drop_prototype_grads(net: SelfDistillationNet) -> None:
    # DINO keeps the prototype layer fixed early on: it stabilizes the start of training.
    for head in (net.cls_head, net.point_head):
        if head is not None and hasattr(head, "prototypes"):
            head.prototypes.grad = None
