"""Decode and cut views on the training device: workers ship JPEG bytes and view geometry, not pixels.

With `--decode workers` (the default), each data worker decodes a file with OpenCV, cuts and resizes
its views and sends them as uint8 through shared memory (~1 MB per image for 2×224 + 4×224 views).
With `--decode device`, a worker only reads the file, takes the image size from its header and draws
the view plan (boxes, flips, reference points: the same random draws as the worker path); the main
process then decodes the whole batch at once on the GPU (nvJPEG, through
`torchvision.io.decode_jpeg`) and cuts every view with `roi_align`, which averages several samples per
output pixel when it shrinks (like INTER_AREA) and samples bilinearly when it enlarges (like
INTER_LINEAR), in OpenCV's pixel-centre convention. Files that are not JPEG, and JPEGs the device
decoder refuses, are decoded with OpenCV instead; a file nothing can decode is replaced by another
image of the batch and reported as skipped, as in the worker path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from training.data.images import read_image_rgb, to_rgb8
from training.data.multicrop import MultiCropConfig, ViewPlan, plan_views
from training.data.view_batch import ViewBatch
from training.errors import UserError

DecodeOn = Literal["workers", "device"]
DECODE_ON: tuple[str, ...] = get_args(DecodeOn)
JPEG_MAGIC = b"\xff\xd8\xff"
# Float copies of the source images a single roi_align call may hold (bytes): big frames go in chunks.
RENDER_BUDGET = 1 << 30


@dataclass(frozen=True)
class EncodedImage:
    """What a worker sends for one image: its file bytes (JPEG) or decoded pixels (anything else)."""

    path: str
    size: tuple[int, int]  # (height, width) the plan was drawn for
    plan: ViewPlan
    jpeg: np.ndarray | None  # 1-D uint8 file contents
    pixels: np.ndarray | None  # [H, W, 3] uint8 RGB


def read_for_device(path: Path, rng: np.random.Generator, config: MultiCropConfig) -> EncodedImage | None:
    """Read `path` and plan its views without decoding JPEG pixels; None when the file is unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    if data[:3].tobytes() == JPEG_MAGIC:
        try:
            with Image.open(io.BytesIO(data.tobytes())) as header:  # reads the header only
                width, height = header.size
        except (UnidentifiedImageError, OSError, ValueError):
            return None
        return EncodedImage(str(path), (height, width), plan_views(height, width, rng, config), data, None)
    pixels = read_image_rgb(path)
    if pixels is None:
        return None
    height, width = pixels.shape[:2]
    return EncodedImage(str(path), (height, width), plan_views(height, width, rng, config), None, pixels)


@dataclass
class EncodedBatch:
    """A batch as workers leave it in `--decode device` mode; `to(device)` turns it into a `ViewBatch`."""

    items: list[EncodedImage]
    config: MultiCropConfig
    skipped: list[str]

    @property
    def batch_size(self) -> int:
        return len(self.items)

    def pin_memory(self) -> EncodedBatch:
        return self  # a few MB of bytes: pinning would cost more than it saves

    def to(self, device: torch.device) -> ViewBatch:

        decoded, skipped = decode_batch(self.items, device)
        stand_in = _first_decoded(decoded)
        # An image nothing could decode is replaced by a decodable one, plan and all: the batch keeps its size.
        items = [
            item if image is not None else self.items[stand_in]
            for item, image in zip(self.items, decoded, strict=True)
        ]
        images = [image if image is not None else decoded[stand_in] for image in decoded]
        plans = [item.plan for item in items]
        globals_ = range(self.config.global_crops)
        locals_ = range(self.config.global_crops, self.config.num_views)
        global_crops = render_views(images, plans, globals_, self.config.global_size)
        local_crops = render_views(images, plans, locals_, self.config.local_size)
        teacher = torch.from_numpy(np.stack([item.plan.teacher_points for item in items]))  # [B, G, V, k, 2]
        student = torch.from_numpy(np.stack([item.plan.student_points for item in items]))  # [B, V, G, k, 2]
        return ViewBatch(
            global_crops=global_crops,
            local_crops=local_crops,
            teacher_points=teacher.flatten(2, 3).transpose(0, 1).contiguous().to(device, non_blocking=True),
            student_points=student.flatten(2, 3).transpose(0, 1).contiguous().to(device, non_blocking=True),
            skipped=self.skipped + skipped,
        )


def decode_batch(
    items: list[EncodedImage], device: torch.device
) -> tuple[list[torch.Tensor | None], list[str]]:
    """`[3, H, W]` uint8 images on `device` (None where nothing could decode one) and the paths skipped.

    All JPEGs go to the device decoder in one call; if it refuses the batch, each is retried alone,
    then with OpenCV on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    images: list[torch.Tensor | None] = [None] * len(items)
    jpeg_indices = [i for i, item in enumerate(items) if item.jpeg is not None]
    encoded = [torch.from_numpy(items[i].jpeg) for i in jpeg_indices]
    try:
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device) if encoded else []
    except RuntimeError:
        decoded = [_decode_one(tensor, device) for tensor in encoded]
    for i, image in zip(jpeg_indices, decoded, strict=True):
        images[i] = image
    skipped = []
    for i, item in enumerate(items):
        if images[i] is None:
            pixels = item.pixels if item.pixels is not None else _opencv_decode(item.jpeg)
            if pixels is None:
                skipped.append(item.path)
                continue
            images[i] = torch.from_numpy(pixels).permute(2, 0, 1).to(device, non_blocking=True)
        if tuple(images[i].shape[-2:]) != item.size:
            # The header lied about the size (or the decoder applied an orientation): plan is unusable.
            images[i] = None
            skipped.append(item.path)
    return images, skipped


def _decode_one(encoded: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def _opencv_decode(jpeg: np.ndarray | None) -> np.ndarray | None:
    import cv2

    if jpeg is None:
        return None
    image = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    return to_rgb8(image) if image is not None and image.size else None


def _first_decoded(images: list[torch.Tensor | None]) -> int:
    for index, image in enumerate(images):
        if image is not None:
            return index
    raise UserError("no image of a batch could be decoded")


def render_views(images: list[torch.Tensor], plans: list[ViewPlan], views: range, size: int) -> torch.Tensor:
    """Views `views` of every image, resized to `size`², mirrored where planned: `[len(views), B, 3, S, S]` uint8.

    Images of one shape are cut by one `roi_align` call (in chunks that keep their float copies under
    `RENDER_BUDGET`); mixed shapes go shape by shape.
    """
    from torchvision.ops import roi_align

    device = images[0].device
    out = torch.empty(len(views), len(images), 3, size, size, dtype=torch.uint8, device=device)
    if not len(views):
        return out
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    for shape, indices in by_shape.items():
        per_chunk = max(1, RENDER_BUDGET // (4 * int(np.prod(shape))))
        for start in range(0, len(indices), per_chunk):
            chunk = indices[start : start + per_chunk]
            sources = torch.stack([images[i] for i in chunk]).float()
            boxes = torch.from_numpy(np.stack([plans[i].boxes[views.start : views.stop] for i in chunk]))
            rois = torch.cat(
                [
                    torch.arange(len(chunk)).repeat_interleave(len(views))[:, None].double(),
                    boxes.reshape(-1, 4),
                ],
                dim=1,
            ).to(device=device, dtype=sources.dtype)
            # aligned=True: box edges are pixel edges, so bin centres fall where OpenCV's resize samples.
            crops = roi_align(
                sources, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
            )
            crops = crops.round_().clamp_(0, 255).to(torch.uint8).view(len(chunk), len(views), 3, size, size)
            flips = torch.from_numpy(
                np.stack([plans[i].flipped[views.start : views.stop] for i in chunk])
            ).to(device)
            out[:, chunk] = torch.where(flips[:, :, None, None, None], crops.flip(-1), crops).transpose(0, 1)
    return out


def collate_encoded(items: list, config: MultiCropConfig) -> EncodedBatch:
    """Gather worker items (`EncodedImage` + skipped paths) into one `EncodedBatch`."""
    return EncodedBatch(
        items=[item.sample for item in items],
        config=config,
        skipped=[path for item in items for path in item.skipped],
    )
