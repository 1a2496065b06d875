"""Collapse monitors: the end-of-run verdict a user reads after `train-pipeline pretrain`."""

from __future__ import annotations

import math

import torch

from training.monitors import collapse_warnings, effective_rank

K = 4096


def dino_rows(image_entropy: float, point_entropy: float, count: int = 8) -> list[dict[str, float]]:
    return [
        {"step": 20 * (i + 1), "teacher_entropy_image": image_entropy, "teacher_entropy_point": point_entropy}
        for i in range(count)
    ]


def test_uniform_teacher_is_reported_per_level() -> None:
    rows = dino_rows(image_entropy=math.log(K) - 1e-4, point_entropy=0.8 * math.log(K))
    warnings = collapse_warnings(rows, prototypes={"image": K, "point": K}, projection_dim=256)
    assert len(warnings) == 1
    assert warnings[0].startswith("image-level objective collapsed")
    assert "4096 prototypes" in warnings[0]


def test_sharp_teachers_raise_nothing() -> None:
    rows = dino_rows(image_entropy=0.7 * math.log(K), point_entropy=0.9 * math.log(K))
    assert collapse_warnings(rows, prototypes={"image": K, "point": K}, projection_dim=256) == []


def test_only_the_end_of_the_run_is_judged() -> None:
    # Uniform at the start (every run begins near it), sharp over the last quarter: healthy.
    rows = dino_rows(math.log(K), math.log(K), count=6) + dino_rows(
        0.5 * math.log(K), 0.5 * math.log(K), count=2
    )
    assert collapse_warnings(rows, prototypes={"image": K, "point": K}, projection_dim=256) == []
    # And the reverse: a run that ends uniform is reported whatever its start looked like.
    rows.reverse()
    assert len(collapse_warnings(rows, prototypes={"image": K, "point": K}, projection_dim=256)) == 2


def test_coding_rate_runs_are_judged_by_embedding_spread() -> None:
    spread = [{"step": 20, "feature_std_image": 1 / 16}]
    collapsed = [{"step": 20, "feature_std_image": 1e-3}]
    assert collapse_warnings(spread, prototypes={}, projection_dim=256) == []
    (warning,) = collapse_warnings(collapsed, prototypes={}, projection_dim=256)
    assert warning.startswith("image-level embeddings collapsed")


def test_no_metrics_no_verdict() -> None:
    assert collapse_warnings([], prototypes={"image": K}, projection_dim=256) == []


def test_effective_rank_counts_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    one_line = torch.randn(64, 1, generator=generator) * torch.ones(1, 32)
    isotropic = torch.randn(256, 32, generator=generator)
    assert effective_rank(one_line) < 1.01
    assert 25 < effective_rank(isotropic) <= 32
