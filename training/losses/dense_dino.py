"""DenseDINO: DINO self-distillation on class tokens plus the same on reference tokens of matching points.

    L = α · L_image + (1 − α) · L_point

L_image compares teacher global view g with student view j ≠ g on the class token; L_point compares
the reference tokens of the same physical points, teacher view g against student view j. Class and
point tokens use separate heads and separate centers. Without points this is plain DINO.
"""

from __future__ import annotations

import torch
from torch import nn

from training.losses.dino import DINOLoss, mean_entropy
from training.losses.pairs import image_pairs, matched_points
from training.losses.terms import LossTerms


class DenseDINOLoss(nn.Module):
    """Image- and point-level DINO losses with their centers (`use_points=False`: the DINO baseline)."""

    def __init__(
        self,
        num_prototypes: int,
        *,
        use_points: bool,
        point_prototypes: int | None = None,
        alpha: float = 0.5,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.alpha = alpha if use_points else 1.0
        self.image = DINOLoss(num_prototypes, student_temp, teacher_temp, center_momentum)
        point_prototypes = point_prototypes or num_prototypes
        self.point = (
            DINOLoss(point_prototypes, student_temp, teacher_temp, center_momentum) if use_points else None
        )

    def forward(
        self,
        student_cls: torch.Tensor,
        teacher_cls: torch.Tensor,
        student_points: torch.Tensor | None = None,
        teacher_points: torch.Tensor | None = None,
    ) -> LossTerms:
        """Args are head logits: class `[V, B, K]` / `[G, B, K]`, points `[V, B, G, k, K]` / `[G, B, V, k, K]`."""
        teacher_index, student_index = image_pairs(
            teacher_cls.shape[0], student_cls.shape[0], student_cls.device
        )
        teacher_probs = self.image.teacher_probs(teacher_cls)
        image_loss = self.image(teacher_probs[teacher_index], student_cls[student_index])
        logs = {"loss_image": image_loss.detach(), "teacher_entropy_image": mean_entropy(teacher_probs)}
        self.image.update_center(teacher_cls)
        if self.point is None:
            return LossTerms(image_loss, logs)

        teacher_matched, student_matched = matched_points(teacher_points, student_points)
        point_probs = self.point.teacher_probs(teacher_matched)
        point_loss = self.point(point_probs, student_matched)
        self.point.update_center(teacher_matched)
        logs.update(loss_point=point_loss.detach(), teacher_entropy_point=mean_entropy(point_probs))
        return LossTerms(self.alpha * image_loss + (1 - self.alpha) * point_loss, logs)
