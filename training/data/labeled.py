"""Labeled sets: images with per-pixel defect masks, in our layout or in the MVTec AD layout.

Our layout (also what reviewed inspections export to), defined with the `defects.json` schema in
`inspect_svc.labeled_layout`::

    ROOT/images/<stem>.<ext>     any readable image format; subfolders allowed (they become part of the stem)
    ROOT/masks/<stem>.png        non-zero = defect; no mask file = a defect-free image
    ROOT/defects.json            optional: {"samples": {stem: {"line": ..., "defects": [...]}}}

MVTec AD layout, one category (ROOT/train, ROOT/test, ROOT/ground_truth) or a folder of categories,
each category then being a line::

    train/good/<name>.png                      defect-free
    test/<type>/<name>.png                     type "good" = defect-free
    ground_truth/<type>/<name>_mask.png
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspect_svc.labeled_layout import (
    IMAGES_DIR,
    LABELS_FILE,
    MASK_SUFFIX,
    MASKS_DIR,
    LabeledLayoutError,
    SampleLabel,
    read_defects_file,
)
from training.data.images import IMAGE_SUFFIXES, list_images, read_images
from training.errors import UserError

UNSPECIFIED_DEFECT = "unspecified"  # the type of a masked image whose type no file names
_MVTEC_GOOD = "good"


@dataclass(frozen=True)
class LabeledSample:
    """One labeled image.

    Attributes:
        stem: Unique name within the set.
        image: Image file.
        mask: Mask file, None for a defect-free image.
        defect_types: Defect types shown; empty for a defect-free image.
        line: Production line (texture, MVTec category), None when unknown.
        split: "train" or "test" in the MVTec layout (its own split), None in ours.
    """

    stem: str
    image: Path
    mask: Path | None
    defect_types: tuple[str, ...] = ()
    line: str | None = None
    split: str | None = None

    @property
    def defective(self) -> bool:
        return self.mask is not None


@dataclass
class LabeledSet:
    """The samples of a labeled folder, sorted by stem."""

    root: Path
    layout: str  # "folders", "mvtec", or "mixed" for several folders of both
    samples: list[LabeledSample] = field(default_factory=list)

    @property
    def defective(self) -> list[LabeledSample]:
        return [s for s in self.samples if s.defective]

    @property
    def defect_free(self) -> list[LabeledSample]:
        return [s for s in self.samples if not s.defective]

    @property
    def defect_types(self) -> list[str]:
        return sorted({t for s in self.samples for t in s.defect_types})

    @property
    def lines(self) -> list[str]:
        return sorted({s.line for s in self.samples if s.line is not None})


def load_labeled_set(root: Path | str) -> LabeledSet:
    """Read a labeled folder in our layout or the MVTec AD layout (see the module docstring).

    Raises:
        UserError: The folder is missing, matches neither layout, holds no images, or holds masks
            that belong to no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"labeled folder {root} does not exist" if not root.exists() else f"{root} is not a folder"
        )
    if (root / "images").is_dir():
        return LabeledSet(root=root, layout="folders", samples=_read_folders_layout(root))
    if _is_mvtec_category(root):
        return LabeledSet(root=root, layout="mvtec", samples=_read_mvtec_category(root, line=root.name))
    categories = sorted(p for p in root.iterdir() if p.is_dir() and _is_mvtec_category(p))
    if categories:
        samples = [s for category in categories for s in _read_mvtec_category(category, line=category.name)]
        return LabeledSet(root=root, layout="mvtec", samples=samples)
    if (root / "labeled" / "images").is_dir():
        raise UserError(
            f"{root} is not a labeled set, but {root / 'labeled'} looks like one: pass that folder"
        )
    raise UserError(
        f"{root} is not a labeled set: expected an images/ folder (with masks/), "
        "or the MVTec AD layout (train/, test/, ground_truth/)"
    )


def load_labeled_sets(roots: Sequence[Path | str]) -> LabeledSet:
    """Several labeled folders read as one set (e.g. the reviewed inspections plus the earlier labels).

    Raises:
        UserError: any folder is unreadable as a labeled set, or two folders hold an image of the same
            stem (the same image passed twice would weigh double and could leak into validation).
    """
    sets = [load_labeled_set(root) for root in roots]
    if not sets:
        raise UserError("no labeled folder given")
    if len(sets) == 1:
        return sets[0]
    seen: dict[str, Path] = {}
    for labeled in sets:
        for sample in labeled.samples:
            if sample.stem in seen:
                raise UserError(
                    f"image {sample.stem!r} is in both {seen[sample.stem]} and {labeled.root}: pass each image once"
                )
            seen[sample.stem] = labeled.root
    samples = sorted((s for labeled in sets for s in labeled.samples), key=lambda s: s.stem)
    layout = sets[0].layout if len({labeled.layout for labeled in sets}) == 1 else "mixed"
    return LabeledSet(root=sets[0].root, layout=layout, samples=samples)


def read_mask(path: Path | str, shape: tuple[int, ...]) -> np.ndarray:
    """Read a mask as bool `[H, W]` (any non-zero channel = defect), checked against the image's shape.

    Raises:
        UserError: The file cannot be decoded, or its size differs from the image's (`shape[:2]`).
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise UserError(f"mask {path} cannot be read as an image")
    if mask.shape[:2] != tuple(shape[:2]):
        raise UserError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its image is {shape[1]}x{shape[0]} px"
        )
    return mask.any(axis=2) if mask.ndim == 3 else mask != 0


def _read_folders_layout(root: Path) -> list[LabeledSample]:
    images_dir, masks_dir = root / IMAGES_DIR, root / MASKS_DIR
    stems = _stems_of(list_images(images_dir), images_dir)
    masks = (
        _stems_of(list_images(masks_dir), masks_dir, suffixes={MASK_SUFFIX}) if _has_files(masks_dir) else {}
    )
    orphans = sorted(set(masks) - set(stems))
    if orphans:
        raise UserError(
            f"{len(orphans)} mask(s) in {masks_dir} match no image in {images_dir} "
            f"(e.g. {', '.join(orphans[:3])}); a mask must be named <image stem>.png"
        )
    labels = _read_labels(root)
    samples = []
    for stem, image in sorted(stems.items()):
        mask = masks.get(stem)
        info = labels.get(stem, SampleLabel())
        types = tuple(info.defects or ()) if mask is not None else ()
        samples.append(
            LabeledSample(
                stem=stem,
                image=image,
                mask=mask,
                defect_types=types or ((UNSPECIFIED_DEFECT,) if mask is not None else ()),
                line=info.line,
            )
        )
    return samples


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _stems_of(paths: Iterable[Path], folder: Path, suffixes: set[str] | None = None) -> dict[str, Path]:
    """Map stem (path below `folder`, without suffix) → path; two files with one stem are an error."""
    stems: dict[str, Path] = {}
    for path in paths:
        if suffixes is not None and path.suffix.lower() not in suffixes:
            raise UserError(f"{path} is not a PNG; masks must be PNG files named <image stem>.png")
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in stems:
            raise UserError(f"{stems[stem].name} and {path.name} in {path.parent} share the stem {stem!r}")
        stems[stem] = path
    return stems


def _read_labels(root: Path) -> dict[str, SampleLabel]:
    """The per-stem entries of a folder's defects.json, {} when there is none."""
    try:
        return read_defects_file(root).samples
    except LabeledLayoutError as error:
        raise UserError(f"{root / LABELS_FILE} is not a valid defects file ({error})") from None


def _is_mvtec_category(folder: Path) -> bool:
    return (folder / "test").is_dir() and ((folder / "train").is_dir() or (folder / "ground_truth").is_dir())


def _read_mvtec_category(category: Path, line: str) -> list[LabeledSample]:
    samples = []
    for split in ("train", "test"):
        for type_dir in sorted(p for p in (category / split).glob("*") if p.is_dir()):
            for image in sorted(p for p in type_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                samples.append(_mvtec_sample(category, line, split, type_dir.name, image))
    if not samples:
        raise UserError(f"{category} has the MVTec AD layout but holds no images under train/ or test/")
    _check_no_orphan_mvtec_masks(category, samples)
    return samples


def _mvtec_sample(category: Path, line: str, split: str, defect_type: str, image: Path) -> LabeledSample:
    stem = f"{line}-{split}-{defect_type}-{image.stem}"
    if defect_type == _MVTEC_GOOD:
        return LabeledSample(stem=stem, image=image, mask=None, line=line, split=split)
    mask = category / "ground_truth" / defect_type / f"{image.stem}_mask.png"
    if not mask.is_file():
        raise UserError(f"{image} shows a defect ({defect_type}) but its mask {mask} is missing")
    return LabeledSample(
        stem=stem, image=image, mask=mask, defect_types=(defect_type,), line=line, split=split
    )


def _check_no_orphan_mvtec_masks(category: Path, samples: list[LabeledSample]) -> None:
    used = {s.mask for s in samples if s.mask is not None}
    truth = category / "ground_truth"
    orphans = sorted(p for p in truth.rglob("*") if p.is_file() and p not in used) if truth.is_dir() else []
    if orphans:
        raise UserError(
            f"{len(orphans)} mask(s) under {truth} match no test image "
            f"(e.g. {orphans[0].relative_to(category)})"
        )


def split_by_defect_type(
    samples: Iterable[LabeledSample], held_out: Iterable[str]
) -> tuple[list[LabeledSample], list[LabeledSample]]:
    """Split defective samples into (seen types, held-out types) for held-out-type evaluation.

    A sample showing any held-out type goes to the held-out side, so no held-out defect is ever seen
    in training. Defect-free samples are in neither list: the caller decides where they belong.
    """
    held = set(held_out)
    seen, unseen = [], []
    for sample in samples:
        if sample.defective:
            (unseen if held & set(sample.defect_types) else seen).append(sample)
    return seen, unseen


def pick_per_line(samples: Iterable[LabeledSample], per_line: int, seed: int) -> list[LabeledSample]:
    """Pick `per_line` defective samples of every line, deterministically for a seed.

    The pick for a smaller `per_line` is a prefix of the pick for a larger one (1 ⊂ 5 ⊂ 20), so few-shot
    results at different budgets differ only by the added labels. A line with fewer defective samples
    contributes all it has; samples with no line count as one line.

    Raises:
        UserError: `per_line` is below 1.
    """
    if per_line < 1:
        raise UserError(f"the number of labeled images per line must be at least 1, got {per_line}")
    by_line: dict[str, list[LabeledSample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.stem):
        if sample.defective:
            by_line[sample.line or ""].append(sample)
    picked = []
    for line in sorted(by_line):
        # Seeded by the line's name, so adding a line to the set does not change another line's pick.
        order = np.random.default_rng([seed, zlib.crc32(line.encode())]).permutation(len(by_line[line]))
        picked.extend(by_line[line][i] for i in order[:per_line])
    return picked


def list_normal_images(root: Path) -> list[Path]:
    """Defect-free images of a folder; in a labeled folder (images/ + masks/ or MVTec) only its defect-free ones."""
    if (root / "images").is_dir() or (root / "train").is_dir():
        return [s.image for s in load_labeled_set(root).defect_free]
    return list_images(root)


@dataclass
class LabeledImages:
    """Decoded images with bool masks (all-False for defect-free ones)."""

    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    samples: list[LabeledSample] = field(default_factory=list)

    def defective_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.masks) if m.any()]


def load_images_with_masks(samples: list[LabeledSample]) -> LabeledImages:
    """Decode the samples' images and masks; unreadable images are skipped, a bad mask is an error."""
    images, paths = read_images([s.image for s in samples])
    by_path = {s.image: s for s in samples}
    data = LabeledImages()
    for image, path in zip(images, paths, strict=True):
        sample = by_path[path]
        mask = (
            read_mask(sample.mask, image.shape)
            if sample.mask is not None
            else np.zeros(image.shape[:2], bool)
        )
        data.images.append(image)
        data.masks.append(mask)
        data.samples.append(sample)
    return data
