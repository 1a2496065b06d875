"""Whole-frame prediction with a PyTorch model, tiled and stitched by the service's own code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from training.data.normalisation import normalise_image


class TorchPredictor:
    """Whole-frame prediction with a PyTorch model through the service's own tiling code.

    Args:
        model: any module mapping normalised tiles `[n, 3, T, T]` to `[n, 1, T, T]`.
        tile: the model's input size.
        overlap: pixels shared by neighbouring tiles.
        mean: channel means used for normalisation.
        std: channel standard deviations.
        batch_size: tiles per forward pass.
        device: where the tiles go; the model must already be there.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile: int,
        overlap: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        batch_size: int = 16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model, self.tile, self.overlap = model, tile, overlap
        self.mean, self.std, self.batch_size, self.device = mean, std, batch_size, torch.device(device)

    @torch.no_grad()
    def predict(self, image_rgb: np.ndarray) -> np.ndarray:
        """Probability per pixel, float32 [H, W]."""
        return self.predict_outputs(image_rgb, lambda tiles: self.model(tiles))[0]

    @torch.no_grad()
    def predict_outputs(self, image_rgb: np.ndarray, forward: Any) -> list[np.ndarray]:
        """Stitch each map that `forward(tiles)` returns (a tensor or a tuple of `[n, 1, T, T]` tensors)."""
        from inspect_svc.engine.tiling import extract_tiles, make_plan, stitch_plan

        plan = make_plan(image_rgb.shape[0], image_rgb.shape[1], self.tile, self.overlap)
        tiles = extract_tiles(normalise_image(image_rgb, self.mean, self.std), plan.boxes, self.tile)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(tiles), self.batch_size):
            batch = torch.from_numpy(tiles[start : start + self.batch_size]).to(self.device)
            outputs = forward(batch)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            chunks.append([out[:, 0].float().cpu().numpy() for out in outputs])
        return [stitch_plan(np.concatenate([c[i] for c in chunks]), plan) for i in range(len(chunks[0]))]


def default_overlap(tile: int) -> int:
    """Tile overlap used for serving and evaluation: an eighth of the tile."""
    return tile // 8
