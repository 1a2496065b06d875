"""Multi-crop views with exact crop-box bookkeeping, and the reference points shared between views.

Every view is an axis-aligned box of the source image (integer pixel edges, `[x0, y0, x1, y1)`),
resized to a square output and optionally mirrored. Because the box is kept exactly, any source
point can be located in any view: its normalized view coordinate is

    q = 2 · (p − box_origin) / box_extent − 1      (x negated when the view is mirrored),

the `align_corners=False` convention of `torch.nn.functional.grid_sample`, in which −1 and 1 are the
outer pixel edges. That is also the convention `cv2.resize` follows, so sampling a rendered view at
q reads the source pixel at p.

Local crops are redrawn until they overlap every global crop (as Leopart and DenseDINO do), so
reference points can be placed in each (global, other view) pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MAX_DRAWS = 20  # redraws of one crop before the guaranteed-overlap fallback


@dataclass(frozen=True)
class MultiCropConfig:
    """How many views of each kind, their sizes and area ranges, and the points per view pair."""

    global_crops: int = 2
    global_size: int = 224
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_crops: int = 4
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.4)
    points: int = 2
    min_overlap: float = 0.01  # intersection area with every global box, as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def num_views(self) -> int:
        return self.global_crops + self.local_crops


@dataclass(frozen=True)
class MultiCropSample:
    """The views of one image and where the shared points lie in each.

    Attributes:
        global_crops: `[G, 3, Sg, Sg]` uint8 RGB.
        local_crops: `[L, 3, Sl, Sl]` uint8 RGB.
        boxes: `[V, 4]` float64 crop boxes (x0, y0, x1, y1) in source pixels; globals first.
        flipped: `[V]` bool, whether a view is mirrored left-right.
        teacher_points: `[G, V, k, 2]` normalized (x, y) in global view g of the points of pair (g, j).
        student_points: `[V, G, k, 2]` normalized (x, y) in view j of the points of pair (g, j).
            Point m of `teacher_points[g, j]` and of `student_points[j, g]` is one physical point.
    """

    global_crops: np.ndarray
    local_crops: np.ndarray
    boxes: np.ndarray
    flipped: np.ndarray
    teacher_points: np.ndarray
    student_points: np.ndarray


def sample_box(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> np.ndarray:
    """A random-resized-crop box: area fraction in `scale`, aspect ratio in `ratio` (log-uniform)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        box_w = round(math.sqrt(target * aspect))
        box_h = round(math.sqrt(target / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            x0 = int(rng.integers(0, width - box_w + 1))
            y0 = int(rng.integers(0, height - box_h + 1))
            return np.array([x0, y0, x0 + box_w, y0 + box_h], dtype=np.float64)
    side = min(height, width)  # degenerate aspect: fall back to a centred square
    x0, y0 = (width - side) // 2, (height - side) // 2
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)


def intersect(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """Intersection of boxes (may be empty: then x1 <= x0 or y1 <= y0)."""
    return np.concatenate(
        [np.maximum(box_a[..., :2], box_b[..., :2]), np.minimum(box_a[..., 2:], box_b[..., 2:])], -1
    )


def box_area(box: np.ndarray) -> np.ndarray:
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def sample_view_boxes(
    rng: np.random.Generator, height: int, width: int, config: MultiCropConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes `[V, 4]` (globals first) and flip flags `[V]` such that every view overlaps every global.

    A global crop must overlap the common region of the globals drawn before it; a local crop must
    overlap each global. Both by more than `min_overlap` of the image area, so that points exist.
    """
    min_area = config.min_overlap * height * width
    globals_: list[np.ndarray] = [sample_box(rng, height, width, config.global_scale, config.ratio)]
    common = globals_[0]
    for _ in range(config.global_crops - 1):
        box = _draw_overlapping(rng, height, width, config.global_scale, config.ratio, [common], min_area)
        globals_.append(box if box is not None else globals_[0].copy())
        common = intersect(common, globals_[-1])
    locals_ = []
    for _ in range(config.local_crops):
        box = _draw_overlapping(rng, height, width, config.local_scale, config.ratio, globals_, min_area)
        locals_.append(box if box is not None else _box_around(rng, height, width, config, common))
    boxes = np.stack(globals_ + locals_)
    flipped = rng.random(len(boxes)) < 0.5
    return boxes, flipped


def _draw_overlapping(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    targets: list[np.ndarray],
    min_area: float,
) -> np.ndarray | None:
    for _ in range(MAX_DRAWS):
        box = sample_box(rng, height, width, scale, ratio)
        if all(box_area(intersect(box, target)) > min_area for target in targets):
            return box
    return None


def _box_around(
    rng: np.random.Generator, height: int, width: int, config: MultiCropConfig, common: np.ndarray
) -> np.ndarray:
    """A local-scale box containing the centre of the globals' common region (overlaps every global)."""
    box = sample_box(rng, height, width, config.local_scale, config.ratio)
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    centre_x, centre_y = (common[0] + common[2]) / 2, (common[1] + common[3]) / 2
    x0 = float(np.clip(np.floor(centre_x - box_w / 2), 0, width - box_w))
    y0 = float(np.clip(np.floor(centre_y - box_h / 2), 0, height - box_h))
    return np.array([x0, y0, x0 + box_w, y0 + box_h])


def to_view_coords(points: np.ndarray, box: np.ndarray, flipped: bool | np.ndarray) -> np.ndarray:
    """Map source-pixel points `[..., 2]` into a view's normalized [-1, 1] coordinates."""
    origin, extent = box[..., None, :2], box[..., None, 2:] - box[..., None, :2]
    coords = 2.0 * (points - origin) / extent - 1.0
    coords[..., 0] = np.where(flipped, -coords[..., 0], coords[..., 0])
    return coords


def reference_points(
    rng: np.random.Generator, boxes: np.ndarray, flipped: np.ndarray, num_globals: int, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `points` source points uniformly inside the overlap of each (global g, view j) pair.

    Returns:
        `(teacher_points [G, V, k, 2], student_points [V, G, k, 2])`, see `MultiCropSample`. The pair
        (g, g) is included so that all views of one size share one token layout; its points are
        never compared.
    """
    num_views = len(boxes)
    overlap = intersect(boxes[:num_globals, None], boxes[None, :])  # [G, V, 4]
    relative = rng.random((num_globals, num_views, points, 2))
    source = overlap[..., None, :2] + relative * (
        overlap[..., None, 2:] - overlap[..., None, :2]
    )  # [G, V, k, 2]
    teacher = to_view_coords(source, boxes[:num_globals, None], flipped[:num_globals, None, None])
    student = to_view_coords(source, boxes[None, :], flipped[None, :, None]).transpose(1, 0, 2, 3)
    return teacher.astype(np.float32), np.ascontiguousarray(student, dtype=np.float32)


def render_view(image: np.ndarray, box: np.ndarray, size: int, flipped: bool) -> np.ndarray:
    """Cut `box` out of an `[H, W, 3]` image, resize it to `size`², mirror it if asked; `[3, S, S]`."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = image[y0:y1, x0:x1]
    # INTER_AREA averages when shrinking (no aliasing); both modes keep cv2's pixel-centre convention.
    shrinking = (x1 - x0) > size or (y1 - y0) > size
    view = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if flipped:
        view = view[:, ::-1]
    return np.ascontiguousarray(view.transpose(2, 0, 1))


@dataclass(frozen=True)
class ViewPlan:
    """The geometry of one image's views, before any pixel is touched (see `MultiCropSample`)."""

    boxes: np.ndarray
    flipped: np.ndarray
    teacher_points: np.ndarray
    student_points: np.ndarray

    def sizes(self, config: MultiCropConfig) -> list[int]:
        return [config.global_size] * config.global_crops + [config.local_size] * config.local_crops


def plan_views(height: int, width: int, rng: np.random.Generator, config: MultiCropConfig) -> ViewPlan:
    """Boxes, flips and reference points of the views of an `height × width` image."""
    boxes, flipped = sample_view_boxes(rng, height, width, config)
    teacher_points, student_points = reference_points(rng, boxes, flipped, config.global_crops, config.points)
    return ViewPlan(boxes, flipped, teacher_points, student_points)


def make_views(image: np.ndarray, rng: np.random.Generator, config: MultiCropConfig) -> MultiCropSample:
    """All views of one `[H, W, 3]` uint8 image with their boxes, flips and reference points."""
    plan = plan_views(image.shape[0], image.shape[1], rng, config)
    views = [
        render_view(image, box, size, flip)
        for box, size, flip in zip(plan.boxes, plan.sizes(config), plan.flipped, strict=True)
    ]
    local_shape = (0, 3, config.local_size, config.local_size)
    return MultiCropSample(
        global_crops=np.stack(views[: config.global_crops]),
        local_crops=np.stack(views[config.global_crops :])
        if config.local_crops
        else np.zeros(local_shape, np.uint8),
        boxes=plan.boxes,
        flipped=plan.flipped,
        teacher_points=plan.teacher_points,
        student_points=plan.student_points,
    )
