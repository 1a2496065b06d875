"""The pretraining data path: a folder of images → batches of uint8 multi-crop views.

Randomness is a pure function of (seed, epoch, image index), never of the worker that draws it, so
a run is reproducible with any number of workers and resumes exactly mid-epoch: the sampler hands
out `(epoch, index)` keys and can start at any batch of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from training.data.device_views import DECODE_ON, DecodeOn, EncodedImage, read_for_device
from training.data.images import read_image_rgb
from training.data.multicrop import MultiCropConfig, MultiCropSample, make_views
from training.data.view_batch import ViewBatch
from training.errors import UserError

SampleKey = tuple[int, int]  # (epoch, image index)


@dataclass(frozen=True)
class _Item:
    sample: MultiCropSample | EncodedImage
    skipped: list[str]


class MultiCropDataset(Dataset[_Item]):
    """Multi-crop views of the images of a folder tree; unreadable files are replaced by the next one.

    With `decode_on="device"` an item is the file's bytes and its view plan (`EncodedImage`), and the
    pixels are decoded and cut on the training device (see `device_views`).
    """

    def __init__(
        self, paths: Sequence[Path], config: MultiCropConfig, seed: int, decode_on: DecodeOn = "workers"
    ) -> None:
        if decode_on not in DECODE_ON:
            raise UserError(f"--decode must be one of {', '.join(DECODE_ON)}, not {decode_on!r}")
        self.paths, self.config, self.seed, self.decode_on = list(paths), config, seed, decode_on

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: SampleKey) -> _Item:
        epoch, index = key
        skipped: list[str] = []
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            rng = np.random.default_rng((self.seed, epoch, index))
            if self.decode_on == "device":
                encoded = read_for_device(path, rng, self.config)
                if encoded is not None:
                    return _Item(encoded, skipped)
            else:
                image = read_image_rgb(path)
                if image is not None:
                    return _Item(make_views(image, rng, self.config), skipped)
            skipped.append(str(path))
        raise UserError("none of the images could be read")


def collate_views(items: list[_Item]) -> ViewBatch:
    """Stack items into a view-major `ViewBatch` (runs in the worker, so the reshuffle is free)."""
    samples = [item.sample for item in items]

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, name) for s in samples]))

    teacher = stack("teacher_points")  # [B, G, V, k, 2]
    student = stack("student_points")  # [B, V, G, k, 2]
    return ViewBatch(
        global_crops=stack("global_crops").transpose(0, 1).contiguous(),
        local_crops=stack("local_crops").transpose(0, 1).contiguous(),
        teacher_points=teacher.flatten(2, 3).transpose(0, 1).contiguous(),
        student_points=student.flatten(2, 3).transpose(0, 1).contiguous(),
        skipped=[path for item in items for path in item.skipped],
    )


class ResumableSampler(Sampler[SampleKey]):
    """This rank's shuffled share of one epoch, as `(epoch, index)` keys, from any batch onwards.

    Wraps `DistributedSampler` (the rank split and per-epoch shuffle) and trims the epoch to whole
    batches, so every rank runs the same number of steps.
    """

    def __init__(self, num_items: int, *, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        self._inner = DistributedSampler(
            range(num_items), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.batch_size = batch_size
        self.batches_per_epoch = len(self._inner) // batch_size
        if self.batches_per_epoch == 0:
            raise UserError(
                f"{num_items} images are too few for batch size {batch_size} on {world_size} process(es)"
            )
        self._epoch, self._start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Start the next iteration at batch `start_batch` of `epoch`."""
        self._epoch, self._start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self._start_batch) * self.batch_size

    def __iter__(self) -> Iterator[SampleKey]:
        self._inner.set_epoch(self._epoch)
        indices = list(self._inner)[: self.batches_per_epoch * self.batch_size]
        for index in indices[self._start_batch * self.batch_size :]:
            yield self._epoch, index
