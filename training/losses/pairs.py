"""Which teacher output is compared with which student output.

Views are numbered globals first. The teacher sees the G global views, the student all V views.
Image level: teacher view g against student view j for every j ≠ g. Point level: the reference
tokens of pair (g, j) in teacher view g against those of the same pair in student view j.
"""

from __future__ import annotations

import torch


def image_pairs(num_globals: int, num_views: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student view indices of the pairs (g, j), j ≠ g; each `[num_pairs]`."""
    teacher, student = torch.meshgrid(
        torch.arange(num_globals, device=device), torch.arange(num_views, device=device), indexing="ij"
    )
    keep = teacher != student
    return teacher[keep], student[keep]


def matched_points(teacher_points: torch.Tensor, student_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Line up the reference-token outputs of the same physical points.

    Args:
        teacher_points: `[G, B, V, k, P]`, teacher view g, pair (g, j) at index j.
        student_points: `[V, B, G, k, P]`, student view j, pair (g, j) at index g.

    Returns:
        `(teacher, student)`, each `[num_pairs, B, k, P]`, for the pairs j ≠ g.
    """
    num_globals, num_views = teacher_points.shape[0], student_points.shape[0]
    teacher = teacher_points.permute(0, 2, 1, 3, 4)  # [G, V, B, k, P]
    student = student_points.permute(2, 0, 1, 3, 4)  # [G, V, B, k, P]
    keep = torch.ones(num_globals, num_views, dtype=torch.bool, device=teacher.device)
    keep.fill_diagonal_(False)
    return teacher[keep], student[keep]
