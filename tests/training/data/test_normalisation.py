from __future__ import annotations

import numpy as np
import torch

from training.data.normalisation import PIXEL_MEAN, PIXEL_STD, normalise_image, normalize


def _image(seed: int = 0, size: int = 17) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size + 3, 3), dtype=np.uint8)


def test_numpy_and_torch_forms_agree() -> None:
    image = _image()
    planes = normalise_image(image, PIXEL_MEAN, PIXEL_STD)
    batch = torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255.0)[None]
    assert np.allclose(normalize(batch)[0].numpy(), planes, atol=1e-6)


def test_black_and_white_pixels_map_to_the_ends_of_the_range() -> None:
    image = np.zeros((2, 1, 3), np.uint8)
    image[1] = 255
    planes = normalise_image(image, PIXEL_MEAN, PIXEL_STD)
    mean, std = np.asarray(PIXEL_MEAN), np.asarray(PIXEL_STD)
    assert np.allclose(planes[:, 0, 0], -mean / std, atol=1e-6)
    assert np.allclose(planes[:, 1, 0], (1 - mean) / std, atol=1e-6)


def test_torch_form_is_channels_last_float32() -> None:
    out = normalize(torch.rand(2, 3, 8, 8))
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_the_service_normalises_as_training_does(test_bundle) -> None:
    """The service folds the same map into one multiply-add; both must agree to float rounding."""
    from inspect_svc.engine.predictor import Predictor

    predictor = Predictor(test_bundle, providers=["CPUExecutionProvider"], intra_op_threads=1)
    mean, std = tuple(test_bundle.manifest.mean), tuple(test_bundle.manifest.std)
    image = _image(size=16)
    served = predictor.normalise(image.transpose(2, 0, 1)[None].copy())[0]
    assert np.allclose(served, normalise_image(image, mean, std), atol=1e-5)
