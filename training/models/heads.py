"""Projection heads on top of backbone tokens.

`DINOHead` (DINO / DenseDINO): MLP → L2-normalized bottleneck → prototypes, giving logits that the
loss turns into distributions with temperatures. `ProjectionHead` (SimDINO): the same MLP ending in
an L2-normalized embedding, compared by cosine; no prototypes, no softmax.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """`num_layers` linear layers with GELU between them."""
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for index, (d_in, d_out) in enumerate(pairwise(dims)):
        if index:
            layers.append(nn.GELU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class ProjectionHead(nn.Module):
    """MLP to an L2-normalized `out_dim` embedding (SimDINO uses 256)."""

    def __init__(self, in_dim: int, out_dim: int = 256, hidden_dim: int = 2048, num_layers: int = 3) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, out_dim, num_layers)
        self.apply(_init_linear)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(tokens), dim=-1)


class DINOHead(nn.Module):
    """MLP → normalized bottleneck → cosine similarity to `num_prototypes` unit-norm prototypes.

    Normalizing the prototype rows is DINO's weight-normed last layer with its gain fixed to 1.
    `prototypes` is the parameter frozen during the first epoch.
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
    ) -> None:
        super().__init__()
        self.projection = ProjectionHead(in_dim, bottleneck_dim, hidden_dim, num_layers)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(self.projection(tokens), F.normalize(self.prototypes, dim=-1))
