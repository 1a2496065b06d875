"""Pixel normalisation of the training side: `(pixel / 255 − mean) / std` per channel.

Every backbone of ours sees pixels normalised this way, in pretraining and downstream alike; a run
records the mean and std and the bundle carries them to the service, which applies the same affine
map (`inspect_svc.engine.predictor.Predictor.normalise`). The numpy form feeds whole frames through
the service's tiling code, the torch form normalises augmented batches on their device.
"""

from __future__ import annotations

import numpy as np
import torch

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def normalise_image(image_rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 RGB [H, W, 3] → float32 [3, H, W]: (pixel / 255 − mean) / std, as the service does it."""
    planes = image_rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (planes - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalization of float images `[B, 3, H, W]` in [0, 1], returned channels-last."""
    mean = images.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous(memory_format=torch.channels_last)
