"""Loss invariants: coding rate against float64, pairing, centers, and the objectives' gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.losses import CodingRateDistillationLoss, DenseDINOLoss, DINOLoss, coding_rate
from training.losses.coding_rate import logdet_spd
from training.losses.pairs import image_pairs, matched_points


def reference_rate(z: torch.Tensor, eps_sq: float) -> float:
    z = z.double()
    n, p = z.shape
    return 0.5 * torch.logdet(torch.eye(p, dtype=torch.float64) + p / (n * eps_sq) * z.T @ z).item()


@pytest.mark.parametrize(("rows", "dim"), [(12, 48), (200, 32), (32, 32)])
def test_coding_rate_matches_float64_logdet(rows: int, dim: int) -> None:
    z = F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows)), dim=-1)
    assert coding_rate(z, 0.05).item() == pytest.approx(reference_rate(z, 0.05), rel=1e-5)


def test_coding_rate_grows_with_spread_and_has_gradient() -> None:
    spread = F.normalize(torch.randn(64, 16), dim=-1).requires_grad_()
    collapsed = F.normalize(torch.ones(64, 16) + 0.01 * torch.randn(64, 16), dim=-1)
    rate = coding_rate(spread, 0.05)
    assert rate > coding_rate(collapsed, 0.05)
    rate.backward()
    assert torch.isfinite(spread.grad).all() and spread.grad.abs().sum() > 0


def test_logdet_falls_back_to_jitter() -> None:
    singular = torch.zeros(3, 3)  # Cholesky fails; the jittered matrix factors
    assert torch.isfinite(logdet_spd(singular))


def test_pairs_match_the_same_points() -> None:
    G, V, B, k = 2, 4, 3, 2
    # Encode (g, j) into the values: teacher view g at pair slot j, student view j at pair slot g.
    teacher = torch.zeros(G, B, V, k, 2)
    student = torch.zeros(V, B, G, k, 2)
    for g in range(G):
        for j in range(V):
            teacher[g, :, j] = torch.tensor([g, j], dtype=torch.float)
            student[j, :, g] = torch.tensor([g, j], dtype=torch.float)
    t, s = matched_points(teacher, student)
    assert t.shape == (G * V - G, B, k, 2)
    torch.testing.assert_close(t, s)
    assert not (t[..., 0] == t[..., 1]).any()  # the (g, g) self pairs are left out
    teacher_index, student_index = image_pairs(G, V, torch.device("cpu"))
    assert (teacher_index != student_index).all() and len(teacher_index) == G * V - G


def test_center_follows_teacher_mean() -> None:
    loss = DINOLoss(8, center_momentum=0.5)
    logits = torch.randn(10, 8)
    loss.update_center(logits)
    torch.testing.assert_close(loss.center, 0.5 * logits.mean(dim=0))
    assert "center" in loss.state_dict()


def test_dense_dino_has_separate_centers_and_weights() -> None:
    torch.manual_seed(0)
    G, V, B, k, K = 2, 3, 4, 2, 16
    loss = DenseDINOLoss(K, use_points=True, alpha=0.25)
    student_cls = torch.randn(V, B, K, requires_grad=True)
    student_points = torch.randn(V, B, G, k, K, requires_grad=True)
    terms = loss(student_cls, torch.randn(G, B, K), student_points, torch.randn(G, B, V, k, K))
    expected = 0.25 * terms.logs["loss_image"] + 0.75 * terms.logs["loss_point"]
    torch.testing.assert_close(terms.total.detach(), expected)
    assert not torch.allclose(loss.image.center, loss.point.center)
    terms.total.backward()
    assert student_points.grad.abs().sum() > 0 and student_cls.grad.abs().sum() > 0


def test_dino_baseline_ignores_points() -> None:
    loss = DenseDINOLoss(16, use_points=False)
    terms = loss(torch.randn(3, 4, 16), torch.randn(2, 4, 16))
    assert loss.point is None and "loss_point" not in terms.logs


def test_coding_rate_objective_rewards_agreement() -> None:
    torch.manual_seed(0)
    G, V, B, k, p = 2, 3, 16, 2, 8
    teacher_cls = F.normalize(torch.randn(1, B, p), dim=-1).expand(G, B, p)
    teacher_points = F.normalize(torch.randn(G, B, V, k, p), dim=-1)
    # A student that reproduces the teacher exactly has alignment 1 at both levels.
    student_cls = teacher_cls[:1].expand(V, B, p)
    student_points = teacher_points.permute(2, 1, 0, 3, 4).contiguous()
    loss = CodingRateDistillationLoss(use_points=True)
    terms = loss(student_cls, teacher_cls, student_points, teacher_points)
    assert terms.logs["align_image"].item() == pytest.approx(1.0, abs=1e-5)
    assert terms.logs["align_point"].item() == pytest.approx(1.0, abs=1e-5)
    noisy = loss(
        F.normalize(student_cls + torch.randn_like(student_cls), dim=-1),
        teacher_cls,
        student_points,
        teacher_points,
    )
    assert noisy.logs["align_image"] < terms.logs["align_image"]
