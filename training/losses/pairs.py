"""Which teacher output is compared with which student output.

Views are numbered globals first. The teacher sees the G global views, the student all V views.
Image level: teacher view g against student view j for every j ≠ g. Point level: the reference
tokens of pair (g, j) in teacher view g against those of the same pair in student view j.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=16)
def image_pairs(num_globals: int, num_views: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student view indices of the pairs (g, j), j ≠ g; each `[num_pairs]`, g-major.

    Built on the host and cached per device: selecting with a boolean mask on the device would
    cost a host synchronization on every step.
    """
    pairs = [(g, j) for g in range(num_globals) for j in range(num_views) if g != j]
    teacher, student = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T
    return teacher.to(device), student.to(device)


def matched_points(
    teacher_points: torch.Tensor, student_points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Line up the reference-token outputs of the same physical points.

    Args:
        teacher_points: `[G, B, V, k, P]`, teacher view g, pair (g, j) at index j.
        student_points: `[V, B, G, k, P]`, student view j, pair (g, j) at index g.

    Returns:
        `(teacher, student)`, each `[num_pairs, B, k, P]`, for the pairs j ≠ g (g-major).
    """
    teacher_index, student_index = image_pairs(
        teacher_points.shape[0], student_points.shape[0], teacher_points.device
    )
    teacher = teacher_points[teacher_index, :, student_index]  # [pairs, B, k, P]
    student = student_points[student_index, :, teacher_index]
    return teacher, student
