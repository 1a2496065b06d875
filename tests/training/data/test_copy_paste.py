"""Copy-paste augmentation: what is cut, what is pasted, and that the masks follow the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.copy_paste import MAX_PIECE_SHARE, DefectPiece, cut_defect_pieces, paste_piece
from training.data.labeled import LabeledImages
from training.errors import UserError
from training.head_training import CropSampler


def _image_with(mask: np.ndarray, colour: tuple[int, int, int] = (250, 10, 10)) -> np.ndarray:
    image = np.full((*mask.shape, 3), 60, np.uint8)
    image[mask] = colour
    return image


def test_separate_defects_are_separate_pieces_and_close_lines_one() -> None:
    mask = np.zeros((64, 64), bool)
    mask[5:9, 5:9] = True  # a pit
    mask[40:60, 30] = mask[40:60, 33] = True  # two parallel scratch lines 3 px apart
    pieces = cut_defect_pieces(
        [_image_with(mask), _image_with(np.zeros((64, 64), bool))], [mask, np.zeros((64, 64), bool)]
    )
    assert sorted(int(p.mask.sum()) for p in pieces) == [16, 40]


def test_a_piece_keeps_its_defect_opaque_and_feathers_only_around_it() -> None:
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:14] = True
    (piece,) = cut_defect_pieces([_image_with(mask)], [mask])
    assert np.all(piece.alpha[piece.mask] == 1.0)
    assert piece.alpha.max() <= 1.0 and piece.alpha[~piece.mask].max() < 1.0
    np.testing.assert_allclose(
        piece.pixels[piece.mask], np.tile([250 / 255, 10 / 255, 10 / 255], (20, 1)), atol=1e-6
    )


def test_pasted_mask_marks_exactly_the_pasted_defect_pixels() -> None:
    rng = np.random.default_rng(0)
    shape = np.zeros((6, 9), bool)
    shape[1:5, 2:8] = True
    shape[0, 2] = True  # asymmetric, so turns and flips show
    alpha = shape.astype(np.float32)
    piece = DefectPiece(pixels=np.ones((6, 9, 3), np.float32), alpha=alpha, mask=shape)
    for _ in range(20):
        background = np.zeros((32, 32, 3), np.float32)
        image, mask = paste_piece(background, np.zeros((32, 32), np.float32), piece, rng)
        assert mask.sum() == shape.sum()
        np.testing.assert_array_equal(
            image[..., 0] == 1.0, mask == 1.0
        )  # colour where, and only where, marked
    assert background.max() == 0.0  # the input crop is left alone


def test_existing_defects_stay_marked_and_large_pieces_are_windowed() -> None:
    rng = np.random.default_rng(1)
    big = np.ones((60, 60), bool)
    piece = DefectPiece(pixels=np.ones((60, 60, 3), np.float32), alpha=big.astype(np.float32), mask=big)
    old = np.zeros((32, 32), np.float32)
    old[0, 0] = 1.0
    image, mask = paste_piece(np.zeros((32, 32, 3), np.float32), old, piece, rng)
    side = int(MAX_PIECE_SHARE * 32)
    assert mask.sum() >= side * side and mask[0, 0] == 1.0
    assert image[..., 0].sum() == side * side


def _labeled(count: int = 3) -> LabeledImages:
    rng = np.random.default_rng(2)
    data = LabeledImages()
    for index in range(count):
        mask = np.zeros((48, 48), bool)
        if index == 0:
            mask[20:24, 20:30] = True
        data.images.append(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        data.masks.append(mask)
    return data


def test_sampler_pastes_into_every_crop_at_share_one() -> None:
    sampler = CropSampler(_labeled(), 32, (0.5,) * 3, (0.25,) * 3, seed=0, copy_paste=1.0)
    _, masks = sampler.batch(24)
    assert all(float(m.sum()) >= 40 for m in masks)  # the 4x10 defect is pasted whole into each crop


def test_sampler_without_copy_paste_is_unchanged() -> None:
    plain = CropSampler(_labeled(), 32, (0.5,) * 3, (0.25,) * 3, seed=0)
    off = CropSampler(_labeled(), 32, (0.5,) * 3, (0.25,) * 3, seed=0, copy_paste=0.0)
    for (a, ma), (b, mb) in zip((plain.batch(8), plain.batch(8)), (off.batch(8), off.batch(8)), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(ma.numpy(), mb.numpy())


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_sampler_refuses_a_share_outside_zero_one(share: float) -> None:
    with pytest.raises(UserError, match="copy-paste"):
        CropSampler(_labeled(), 32, (0.5,) * 3, (0.25,) * 3, seed=0, copy_paste=share)
