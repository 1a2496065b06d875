"""Self-supervised losses: DINO self-distillation, coding rate, DenseDINO point loss."""

from training.losses.coding_rate import coding_rate
from training.losses.dense_dino import DenseDINOLoss
from training.losses.dino import DINOLoss
from training.losses.simdino import CodingRateDistillationLoss
from training.losses.terms import LossTerms

__all__ = ["CodingRateDistillationLoss", "DINOLoss", "DenseDINOLoss", "LossTerms", "coding_rate"]
