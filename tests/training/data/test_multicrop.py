"""Multi-crop views: boxes, overlap and the point correspondence between views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.data.multicrop import MultiCropConfig, box_area, intersect, make_views, sample_view_boxes

SIDE = 256


def coordinate_image() -> np.ndarray:
    """An image whose red channel is the pixel's column and green channel its row."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def read_source_coords(views: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinearly sample `[V, 3, S, S]` views at `[V, P, 2]` normalized points; decoded source (x, y)."""
    grid = torch.from_numpy(points).float()[:, None]  # [V, 1, P, 2]
    sampled = F.grid_sample(
        torch.from_numpy(views).float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return (
        sampled[:, :2, 0].permute(0, 2, 1).numpy() + 0.5
    )  # pixel value = index of the pixel whose centre is +0.5


@pytest.mark.parametrize("seed", range(6))
def test_matching_points_read_the_same_source_pixel(seed: int) -> None:
    config = MultiCropConfig(
        global_crops=2,
        global_size=64,
        global_scale=(0.2, 1.0),
        local_crops=3,
        local_size=40,
        local_scale=(0.05, 0.4),
        points=5,
    )
    sample = make_views(coordinate_image(), np.random.default_rng(seed), config)
    G, V, k = config.global_crops, config.num_views, config.points
    views = [sample.global_crops] * G + [sample.local_crops] * (V - G)
    for g in range(G):
        teacher_read = read_source_coords(
            sample.global_crops[g : g + 1], sample.teacher_points[g].reshape(1, V * k, 2)
        )
        teacher_read = teacher_read.reshape(V, k, 2)
        for j in range(V):
            j_index = j if j < G else j - G
            student_read = read_source_coords(
                views[j][j_index : j_index + 1], sample.student_points[j, g][None]
            )[0]
            # One view pixel may span several source pixels; bilinear reads of a resized ramp stay
            # within half a view pixel (in source units) of the true coordinate.
            view_pixel = np.ptp(sample.boxes[[g, j]][:, [0, 2]], axis=1).max() / config.local_size
            assert np.abs(teacher_read[j] - student_read).max() <= view_pixel + 1.0, (g, j)


def test_correspondence_covers_flips_and_both_sizes() -> None:
    config = MultiCropConfig(global_size=64, local_crops=3, local_size=40)
    flips = [make_views(coordinate_image(), np.random.default_rng(s), config).flipped for s in range(6)]
    assert np.concatenate(flips).any() and not np.concatenate(flips).all()


def test_mirrored_view_negates_x() -> None:
    config = MultiCropConfig(global_size=64, local_crops=1, local_size=40, points=3)
    for seed in range(20):
        sample = make_views(coordinate_image(), np.random.default_rng(seed), config)
        if sample.flipped[0]:
            break
    red = sample.global_crops[0, 0].astype(float)
    # In a mirrored view the source column decreases from left to right.
    assert red[:, 0].mean() > red[:, -1].mean()


@pytest.mark.parametrize("seed", range(20))
def test_every_view_overlaps_every_global(seed: int) -> None:
    config = MultiCropConfig(global_crops=2, local_crops=6, local_scale=(0.02, 0.1))
    boxes, _ = sample_view_boxes(np.random.default_rng(seed), 120, 300, config)
    overlaps = box_area(intersect(boxes[:2, None], boxes[None]))
    assert (overlaps > 0).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 300).all() and (boxes[:, 3] <= 120).all()


def test_points_lie_inside_both_views() -> None:
    sample = make_views(
        coordinate_image(), np.random.default_rng(3), MultiCropConfig(global_size=64, local_size=32)
    )
    assert np.abs(sample.teacher_points).max() <= 1.0
    assert np.abs(sample.student_points).max() <= 1.0
    assert sample.teacher_points.shape == (2, 6, 2, 2)
    assert sample.student_points.shape == (6, 2, 2, 2)
