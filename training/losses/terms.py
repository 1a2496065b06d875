"""The value a pretraining objective returns."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """`total` is minimized; `logs` holds detached scalars for the metrics file (read only when logged)."""

    total: torch.Tensor
    logs: dict[str, torch.Tensor]
