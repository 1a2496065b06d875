"""SimDINO-style objective on class and point tokens: cosine alignment plus a coding-rate term.

    L_x = −mean cos(z_teacher, z_student) − γ · R(Z),   L = α · L_image + (1 − α) · L_point

The embeddings are L2-normalized projections (no prototypes, temperatures or centers). R(Z) is the
coding rate (`training.losses.coding_rate`) of Z = ½(student + teacher) embeddings of the global
views, one Z per teacher view g, averaged over g; γ = 1/n + 1/p with n the rows of Z over all
processes. Without points only the image level is used.
"""

from __future__ import annotations

import torch
from torch import nn

from training.distributed import world_size
from training.losses.coding_rate import coding_rate
from training.losses.pairs import image_pairs, matched_points
from training.losses.terms import LossTerms


class CodingRateDistillationLoss(nn.Module):
    """Alignment + coding rate on class tokens and (optionally) on matched reference tokens."""

    def __init__(self, *, use_points: bool, alpha: float = 0.5, eps_sq: float = 0.05) -> None:
        super().__init__()
        self.use_points, self.eps_sq = use_points, eps_sq
        self.alpha = alpha if use_points else 1.0

    def forward(
        self,
        student_cls: torch.Tensor,
        teacher_cls: torch.Tensor,
        student_points: torch.Tensor | None = None,
        teacher_points: torch.Tensor | None = None,
    ) -> LossTerms:
        """Args are normalized embeddings: class `[V, B, p]` / `[G, B, p]`, points `[V, B, G, k, p]` / `[G, B, V, k, p]`."""
        num_globals = teacher_cls.shape[0]
        teacher_cls = teacher_cls.detach()
        teacher_index, student_index = image_pairs(num_globals, student_cls.shape[0], student_cls.device)
        image_align = _mean_cosine(teacher_cls[teacher_index], student_cls[student_index])
        image_rate = self._rate(0.5 * (student_cls[:num_globals] + teacher_cls))  # rows: [G, B, p]
        image_loss = -image_align - image_rate[0]
        logs = {
            "align_image": image_align.detach(),
            "rate_image": image_rate[1].detach(),
            "feature_std_image": _feature_std(teacher_cls),
        }
        if not self.use_points:
            return LossTerms(image_loss, {"loss_image": image_loss.detach(), **logs})

        teacher_matched, student_matched = matched_points(teacher_points.detach(), student_points)
        point_align = _mean_cosine(teacher_matched, student_matched)
        # [pairs, B, k, p] → per teacher view g: its V − 1 pairs are consecutive.
        midpoints = 0.5 * (student_matched + teacher_matched)
        point_rate = self._rate(midpoints.reshape(num_globals, -1, midpoints.shape[-1]))
        point_loss = -point_align - point_rate[0]
        logs.update(
            loss_image=image_loss.detach(),
            loss_point=point_loss.detach(),
            align_point=point_align.detach(),
            rate_point=point_rate[1].detach(),
        )
        return LossTerms(self.alpha * image_loss + (1 - self.alpha) * point_loss, logs)

    def _rate(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ·R̄, R̄) with R averaged over the groups `[G, ..., p]` (one Z per teacher view)."""
        rows_per_group = groups[0].numel() // groups.shape[-1]
        dim = groups.shape[-1]
        gamma = 1.0 / (rows_per_group * world_size()) + 1.0 / dim
        rates = [coding_rate(group.reshape(-1, dim), self.eps_sq) for group in groups]
        mean_rate = torch.stack(rates).mean()
        return gamma * mean_rate, mean_rate


def _mean_cosine(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    # Both sides are unit vectors, so the dot product is the cosine.
    return (teacher.float() * student.float()).sum(dim=-1).mean()


@torch.no_grad()
def _feature_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Std over the batch per dimension, averaged; ≈ 1/√p when spread, → 0 at collapse."""
    return embeddings.float().flatten(0, -2).std(dim=0).mean()
