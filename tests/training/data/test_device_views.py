"""`--decode device`: views cut from JPEG bytes on the training device match the worker path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.training.data.test_multicrop import coordinate_image, read_source_coords
from training.data.device_views import EncodedBatch, read_for_device, render_views
from training.data.multicrop import MultiCropConfig, make_views, plan_views
from training.data.pretrain_dataset import MultiCropDataset, collate_views
from training.errors import UserError

CONFIG = MultiCropConfig(global_crops=2, global_size=64, local_crops=3, local_size=32, points=4)
CPU = torch.device("cpu")


def smooth_image(height: int = 180, width: int = 240) -> np.ndarray:
    """Low-frequency colour ramps: JPEG keeps them nearly exact, so decoders and resizers can be compared."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(cols / 23.0)
    green = 128 + 100 * np.cos(rows / 17.0)
    blue = (rows + cols) / (height + width) * 255
    return np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8)


def write_jpeg(path: Path, image_rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return path


def batch_of(paths: list[Path], seed: int = 0) -> EncodedBatch:
    items = [read_for_device(path, np.random.default_rng((seed, i)), CONFIG) for i, path in enumerate(paths)]
    return EncodedBatch(items=items, config=CONFIG, skipped=[])


def test_plan_draws_the_same_randoms_as_the_worker_path(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "a.jpg", smooth_image())
    encoded = read_for_device(path, np.random.default_rng(5), CONFIG)
    worker = make_views(smooth_image(), np.random.default_rng(5), CONFIG)
    assert encoded is not None and encoded.pixels is None and encoded.size == (180, 240)
    np.testing.assert_array_equal(encoded.plan.boxes, worker.boxes)
    np.testing.assert_array_equal(encoded.plan.flipped, worker.flipped)
    np.testing.assert_array_equal(encoded.plan.student_points, worker.student_points)


def test_device_views_match_worker_views(tmp_path: Path) -> None:
    paths = [write_jpeg(tmp_path / f"{i}.jpg", np.roll(smooth_image(), 40 * i, axis=1)) for i in range(3)]
    device_batch = batch_of(paths).to(CPU)
    worker_batch = collate_views(
        [
            SimpleNamespace(
                sample=make_views(
                    cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), np.random.default_rng((0, i)), CONFIG
                ),
                skipped=[],
            )
            for i, p in enumerate(paths)
        ]
    )
    for name in ("global_crops", "local_crops", "teacher_points", "student_points"):
        device_tensor, worker_tensor = getattr(device_batch, name), getattr(worker_batch, name)
        assert device_tensor.shape == worker_tensor.shape and device_tensor.dtype == worker_tensor.dtype, name
    torch.testing.assert_close(device_batch.teacher_points, worker_batch.teacher_points)
    # Different decoders and resamplers: a couple of grey levels apart on average, never far.
    for name in ("global_crops", "local_crops"):
        difference = (getattr(device_batch, name).float() - getattr(worker_batch, name).float()).abs()
        assert difference.mean() < 2.0 and difference.quantile(0.99) < 12, name


@pytest.mark.parametrize("seed", range(4))
def test_device_views_keep_the_point_correspondence(seed: int) -> None:
    """The coordinate-image test of the worker path, through roi_align (flips and both sizes)."""
    image = coordinate_image()
    plan = plan_views(image.shape[0], image.shape[1], np.random.default_rng(seed), CONFIG)
    source = torch.from_numpy(image).permute(2, 0, 1)
    globals_ = render_views([source], [plan], range(2), CONFIG.global_size)[:, 0].numpy()
    locals_ = render_views([source], [plan], range(2, 5), CONFIG.local_size)[:, 0].numpy()
    views = list(globals_) + list(locals_)
    k = CONFIG.points
    for g in range(CONFIG.global_crops):
        teacher_read = read_source_coords(
            globals_[g : g + 1], plan.teacher_points[g].reshape(1, -1, 2)
        ).reshape(-1, k, 2)
        for j in range(CONFIG.num_views):
            student_read = read_source_coords(views[j][None], plan.student_points[j, g][None])[0]
            view_pixel = np.ptp(plan.boxes[[g, j]][:, [0, 2]], axis=1).max() / CONFIG.local_size
            assert np.abs(teacher_read[j] - student_read).max() <= view_pixel + 1.0, (g, j)


def test_non_jpeg_files_are_decoded_by_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(smooth_image(), cv2.COLOR_RGB2BGR))
    encoded = read_for_device(path, np.random.default_rng(0), CONFIG)
    assert encoded is not None and encoded.jpeg is None and encoded.pixels.shape == (180, 240, 3)
    assert batch_of([path]).to(CPU).global_crops.shape == (2, 1, 3, 64, 64)


def test_undecodable_jpeg_is_replaced_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JPEG whose header reads but whose data no decoder takes: the batch keeps its size, the file is reported.

    Real decoders conceal most corruption (grey blocks, default tables), so both decoders are made to refuse it.
    """
    import torchvision.io

    from training.data import device_views

    good = write_jpeg(tmp_path / "good.jpg", smooth_image())
    bad = write_jpeg(tmp_path / "bad.jpg", smooth_image(200, 200))
    bad_bytes = bad.read_bytes()
    real_decode = torchvision.io.decode_jpeg

    def refusing_decode(data, **kwargs):
        if isinstance(data, list):
            if any(t.numpy().tobytes() == bad_bytes for t in data):
                raise RuntimeError("corrupt JPEG data")
            return real_decode(data, **kwargs)
        if data.numpy().tobytes() == bad_bytes:
            raise RuntimeError("corrupt JPEG data")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refusing_decode)
    monkeypatch.setattr(device_views, "_opencv_decode", lambda jpeg: None)
    batch = batch_of([bad, good]).to(CPU)
    assert batch.skipped == [str(bad)]
    assert batch.global_crops.shape == (2, 2, 3, 64, 64)
    torch.testing.assert_close(batch.global_crops[:, 0], batch.global_crops[:, 1])  # the stand-in
    torch.testing.assert_close(batch.teacher_points[:, 0], batch.teacher_points[:, 1])
    with pytest.raises(UserError, match="no image"):
        batch_of([bad]).to(CPU)


def test_truncated_header_is_skipped_by_the_dataset(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "b.jpg", smooth_image())
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    dataset = MultiCropDataset(sorted(tmp_path.glob("*.jpg")), CONFIG, seed=0, decode_on="device")
    item = dataset[(0, 0)]
    assert item.skipped == [str(tmp_path / "a.jpg")] and item.sample.path == str(tmp_path / "b.jpg")


def test_unknown_decode_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--decode"):
        MultiCropDataset([tmp_path / "a.jpg"], CONFIG, seed=0, decode_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_decode_matches_cpu_decode(tmp_path: Path) -> None:
    paths = [write_jpeg(tmp_path / f"{i}.jpg", np.roll(smooth_image(), 30 * i, axis=0)) for i in range(4)]
    on_gpu = batch_of(paths).to(torch.device("cuda"))
    on_cpu = batch_of(paths).to(CPU)
    assert on_gpu.global_crops.is_cuda and not on_gpu.skipped
    difference = (on_gpu.global_crops.cpu().float() - on_cpu.global_crops.float()).abs()
    assert difference.mean() < 1.0
