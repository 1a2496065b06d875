"""The coding rate R(Z) = ½·logdet(I + p/(n·ε²)·ZᵀZ) of n embeddings of dimension p (SimDINO).

Maximizing it spreads the embeddings over many directions, which prevents collapse without centers
or temperatures. Computed in float32 with autocast off (bf16 covariances lose positive
definiteness). Across processes the p×p covariance is summed with a differentiable all-reduce and n
counts every row of every process. In a single process with n < p the n×n Gram form is used:
logdet(I_p + a·ZᵀZ) = logdet(I_n + a·ZZᵀ) (Sylvester), which is cheaper and better conditioned.
"""

from __future__ import annotations

import torch

from training.distributed import differentiable_all_reduce_sum, world_size

JITTER = 1e-4


def coding_rate(embeddings: torch.Tensor, eps_sq: float) -> torch.Tensor:
    """R(Z) for `embeddings` `[n, p]` (rows of this process; combined over processes if distributed)."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        z = embeddings.float()
        rows, dim = z.shape
        if world_size() > 1:
            covariance = differentiable_all_reduce_sum(z.T @ z)
            total_rows = rows * world_size()  # every process contributes the same number of rows
            return 0.5 * logdet_spd(_identity_plus(covariance, dim / (total_rows * eps_sq)))
        gram = z @ z.T if rows < dim else z.T @ z
        return 0.5 * logdet_spd(_identity_plus(gram, dim / (rows * eps_sq)))


def _identity_plus(matrix: torch.Tensor, scale: float) -> torch.Tensor:
    eye = torch.eye(matrix.shape[0], device=matrix.device, dtype=matrix.dtype)
    return eye + scale * matrix


def logdet_spd(matrix: torch.Tensor) -> torch.Tensor:
    """log-determinant of a symmetric positive-definite matrix through its Cholesky factor.

    If the factorization fails (rounding in float32), it is retried with a small diagonal jitter.
    The choice is made on the device, without a host synchronization.
    """
    _, info = torch.linalg.cholesky_ex(matrix.detach())
    eye = torch.eye(matrix.shape[0], device=matrix.device, dtype=matrix.dtype)
    safe = torch.where(info == 0, matrix, matrix + JITTER * eye)
    factor, _ = torch.linalg.cholesky_ex(safe)
    return 2.0 * torch.log(torch.diagonal(factor)).sum()
