"""DINO self-distillation: cross-entropy from a centered, sharpened teacher to the student.

    P_t = softmax((t − c) / τ_t)   (no gradient),   P_s = softmax(s / τ_s),   H = −Σ P_t log P_s

The center c is a running mean of the teacher logits, kept as a buffer so it is checkpointed and
moves with the module; its update is averaged over all processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import all_reduce_mean


class DINOLoss(nn.Module):
    """Cross-entropy between teacher and student prototype logits, with the teacher's center."""

    def __init__(
        self,
        num_prototypes: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.student_temp, self.teacher_temp, self.center_momentum = (
            student_temp,
            teacher_temp,
            center_momentum,
        )
        self.register_buffer("center", torch.zeros(num_prototypes))

    @torch.no_grad()
    def teacher_probs(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Centered, sharpened teacher distribution over prototypes (float32)."""
        return F.softmax((teacher_logits.float() - self.center) / self.teacher_temp, dim=-1)

    def forward(self, teacher_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all leading dimensions."""
        student_log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return -(teacher_probs * student_log_probs).sum(dim=-1).mean()

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the teacher logits' mean over every row of every process."""
        batch_mean = all_reduce_mean(teacher_logits.float().flatten(0, -2).mean(dim=0))
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)


@torch.no_grad()
def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Average entropy (nats) of the rows of `probs`: a collapse monitor (0 = one-hot, log K = uniform)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()
