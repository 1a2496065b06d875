"""Demo data: line images cut from real texture photographs, and a labeled set with synthetic defects.

Each texture stands for one production line. `generate_demo_data` writes

    OUT/unlabeled/<line>/<line>-<index>.png   defect-free images, for self-supervised pretraining
    OUT/labeled/images/<stem>.png             defective and defect-free images
    OUT/labeled/masks/<stem>.png              255 = defect; no file for a defect-free image
    OUT/labeled/defects.json                  per stem: line, texture source, defect families
                                              (the labeled layout: `inspect_svc.labeled_layout`)
    OUT/contact_sheet.png                     labeled images with their masks outlined
    OUT/demo-data.json                        the arguments and counts of the run

Everything is drawn from numpy Generators seeded by (seed, stream, index), so one seed gives
byte-identical files, and an image does not depend on how many others are generated.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspect_svc.labeled_layout import (
    MASKS_DIR,
    DefectsFile,
    SampleLabel,
    image_path,
    mask_path,
    write_defects_file,
)
from training.data.defects import DEFECT_FAMILIES, DefectContext, apply_defect
from training.data.textures import (
    SKIMAGE_TEXTURES,
    UFOAI_TEXTURE_ARCHIVE,
    Texture,
    crop_texture,
    load_archive_textures,
    load_skimage_textures,
)
from training.errors import UserError

RUN_RECORD = "demo-data.json"
CONTACT_SHEET = "contact_sheet.png"
SECOND_DEFECT_PROBABILITY = 0.15
# Textures loaded beyond the lines themselves, only as foreign material for blended-in defects.
EXTRA_FOREIGN_TEXTURES = 4

_UNLABELED_STREAM, _LABELED_STREAM, _PLAN_STREAM = 0, 1, 2


@dataclass(frozen=True)
class LabeledPlanEntry:
    """What one labeled image will be: its name, its line and its defect families (empty = good)."""

    stem: str
    line: str
    families: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticSample:
    """A labeled image together with the clean crop it was drawn on (kept for checking the mask)."""

    clean: np.ndarray  # uint8 RGB
    image: np.ndarray  # uint8 RGB
    mask: np.ndarray  # bool; all False for a defect-free image


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo_data` wrote."""

    out: Path
    unlabeled_count: int
    labeled_count: int
    defective_count: int
    lines: dict[str, str]  # line name → texture source
    defect_counts: dict[str, int]  # family → number of labeled images showing it
    archive_found: bool

    def describe(self) -> str:
        """A few lines for the terminal."""
        sources = "scikit-image" + (
            " + ufoai-textures" if self.archive_found else " (ufoai-textures not installed)"
        )
        families = ", ".join(f"{name} {n}" for name, n in sorted(self.defect_counts.items()))
        return "\n".join(
            [
                f"wrote demo data to {self.out}",
                f"  unlabeled: {self.unlabeled_count} defect-free images in {self.out / 'unlabeled'}",
                (
                    f"  labeled:   {self.labeled_count} images ({self.defective_count} defective) in "
                    f"{self.out / 'labeled'}"
                ),
                f"  lines ({sources}): {', '.join(self.lines)}",
                f"  defects: {families}",
                f"  contact sheet: {self.out / CONTACT_SHEET}",
            ]
        )


def generate_demo_data(
    out: Path,
    *,
    seed: int = 0,
    count: int = 200,
    image_size: int = 256,
    labeled_count: int = 240,
    lines: int = 6,
    defect_free_fraction: float = 0.25,
    texture_archive: Path | None = UFOAI_TEXTURE_ARCHIVE,
) -> DemoSummary:
    """Write unlabeled and labeled demo data to `out` (layout in the module docstring).

    Args:
        out: Output folder: new, empty, or written by an earlier run (its outputs are replaced).
        seed: Seed of every random choice.
        count: Number of unlabeled images, spread evenly over the lines.
        image_size: Side of the square images in pixels.
        labeled_count: Number of labeled images, spread evenly over the lines.
        lines: Number of production lines (= textures); capped by the textures available.
        defect_free_fraction: Share of labeled images without a defect.
        texture_archive: The ufoai-textures archive; None or a missing file uses scikit-image only.

    Raises:
        UserError: A number is out of range, or `out` cannot be used.
    """
    _check_arguments(count, image_size, labeled_count, lines, defect_free_fraction)
    _prepare_output(out)
    textures = load_skimage_textures() + load_archive_textures(
        texture_archive, limit=max(lines - len(SKIMAGE_TEXTURES), 0) + EXTRA_FOREIGN_TEXTURES
    )
    line_textures = {texture.name: texture for texture in textures[:lines]}
    plan = plan_labeled_set(list(line_textures), labeled_count, defect_free_fraction, seed)

    _write_unlabeled(out / "unlabeled", list(line_textures.values()), count, image_size, seed)
    samples = _write_labeled(out / "labeled", plan, line_textures, textures, image_size, seed)
    _write_labels(out / "labeled", plan, line_textures, seed, image_size)
    write_contact_sheet(out / CONTACT_SHEET, plan, samples)

    summary = DemoSummary(
        out=out,
        unlabeled_count=count,
        labeled_count=labeled_count,
        defective_count=sum(1 for entry in plan if entry.families),
        lines={name: texture.source for name, texture in line_textures.items()},
        defect_counts=dict(Counter(family for entry in plan for family in entry.families)),
        archive_found=texture_archive is not None and texture_archive.is_file(),
    )
    _write_run_record(out / RUN_RECORD, summary, seed=seed, image_size=image_size)
    return summary


def _check_arguments(count: int, image_size: int, labeled_count: int, lines: int, defect_free: float) -> None:
    if count < 0:
        raise UserError(f"--count must be 0 or more, got {count}")
    if labeled_count < 0:
        raise UserError(f"--labeled-count must be 0 or more, got {labeled_count}")
    if count + labeled_count == 0:
        raise UserError("--count and --labeled-count are both 0: there is nothing to generate")
    if not 32 <= image_size <= 4096:
        raise UserError(f"--image-size must be between 32 and 4096 pixels, got {image_size}")
    if lines < 1:
        raise UserError(f"--lines must be at least 1, got {lines}")
    if not 0.0 <= defect_free <= 1.0:
        raise UserError(f"the defect-free fraction must be between 0 and 1, got {defect_free}")


def _prepare_output(out: Path) -> None:
    """Create `out`, or clear what an earlier run wrote there; refuse anyone else's non-empty folder."""
    if not out.parent.is_dir():
        raise UserError(f"cannot create {out}: its parent folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / RUN_RECORD).is_file():
            raise UserError(
                f"{out} is not empty and holds no earlier demo data; choose a new or empty folder"
            )
        for folder in ("unlabeled", "labeled"):
            shutil.rmtree(out / folder, ignore_errors=True)
        for file in (CONTACT_SHEET, RUN_RECORD):
            (out / file).unlink(missing_ok=True)
    out.mkdir(exist_ok=True)


def plan_labeled_set(
    line_names: list[str], labeled_count: int, defect_free_fraction: float, seed: int
) -> list[LabeledPlanEntry]:
    """Decide line and defect families of every labeled image.

    Lines take turns so that each gets the same number of images and the same defect-free share.
    Families are dealt from shuffled decks of all families, so every family appears as soon as there
    are as many defective images as families; some images get a second, different family.
    """
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    per_line = [len(range(i, labeled_count, len(line_names))) for i in range(len(line_names))]
    defective_flags = []
    for n in per_line:
        flags = np.arange(n) >= round(n * defect_free_fraction)
        defective_flags.append(list(rng.permutation(flags)))
    family_names = list(DEFECT_FAMILIES)
    deck: list[str] = []
    plan = []
    for index in range(labeled_count):
        line = line_names[index % len(line_names)]
        families: tuple[str, ...] = ()
        if defective_flags[index % len(line_names)].pop():
            if not deck:
                deck = list(rng.permutation(family_names))
            families = (deck.pop(),)
            if rng.random() < SECOND_DEFECT_PROBABILITY:
                families += (str(rng.choice([f for f in family_names if f != families[0]])),)
        plan.append(LabeledPlanEntry(stem=f"{line}-{index:04d}", line=line, families=families))
    return plan


def synthesize_sample(
    texture: Texture,
    families: tuple[str, ...],
    *,
    size: int,
    rng: np.random.Generator,
    foreign: list[Texture],
) -> SyntheticSample:
    """Cut a clean line image from `texture` and draw the given defect families on it.

    `foreign` supplies the material of blended-in defects; a texture other than the line's own is used.
    """
    clean = crop_texture(texture.pixels, size, rng)
    image, mask = clean, np.zeros(clean.shape[:2], bool)
    others = [t for t in foreign if t.name != texture.name] or foreign
    for family in families:
        context = DefectContext(foreign_texture=others[int(rng.integers(len(others)))].pixels)
        image, family_mask = apply_defect(image, family, rng, context)
        mask |= family_mask
    return SyntheticSample(clean=clean, image=image, mask=mask)


def _write_unlabeled(folder: Path, textures: list[Texture], count: int, size: int, seed: int) -> None:
    for index in range(count):
        texture = textures[index % len(textures)]
        rng = np.random.default_rng([seed, _UNLABELED_STREAM, index])
        write_png(
            folder / texture.name / f"{texture.name}-{index:04d}.png", crop_texture(texture.pixels, size, rng)
        )


def _write_labeled(
    folder: Path,
    plan: list[LabeledPlanEntry],
    line_textures: dict[str, Texture],
    foreign: list[Texture],
    size: int,
    seed: int,
) -> list[SyntheticSample]:
    samples = []
    for index, entry in enumerate(plan):
        rng = np.random.default_rng([seed, _LABELED_STREAM, index])
        sample = synthesize_sample(
            line_textures[entry.line], entry.families, size=size, rng=rng, foreign=foreign
        )
        write_png(folder / image_path(entry.stem, ".png"), sample.image)
        if entry.families:
            write_png(folder / mask_path(entry.stem), sample.mask.astype(np.uint8) * 255)
        samples.append(sample)
    (folder / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    return samples


def _write_labels(
    folder: Path, plan: list[LabeledPlanEntry], line_textures: dict[str, Texture], seed: int, image_size: int
) -> None:
    samples = {
        entry.stem: SampleLabel(
            line=entry.line, texture=line_textures[entry.line].source, defects=list(entry.families)
        )
        for entry in plan
    }
    lines = {name: texture.source for name, texture in line_textures.items()}
    write_defects_file(
        folder,
        DefectsFile(
            seed=seed,
            image_size=image_size,
            defect_families=list(DEFECT_FAMILIES),
            lines=lines,
            samples=samples,
        ),
    )


def _write_run_record(path: Path, summary: DemoSummary, *, seed: int, image_size: int) -> None:
    record = {
        "seed": seed,
        "image_size": image_size,
        "unlabeled_count": summary.unlabeled_count,
        "labeled_count": summary.labeled_count,
        "defective_count": summary.defective_count,
        "lines": summary.lines,
        "defect_counts": dict(sorted(summary.defect_counts.items())),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 RGB or grey image as PNG, creating the folder; deterministic bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(encoded.tobytes())


def write_contact_sheet(
    path: Path,
    plan: list[LabeledPlanEntry],
    samples: list[SyntheticSample],
    *,
    columns: int = 6,
    rows: int = 4,
) -> None:
    """A grid of labeled images, each mask outlined in red and captioned with its families.

    One image of every family comes first, then defect-free ones, then the rest in order.
    """
    chosen = _pick_for_sheet(plan, columns * rows)
    tile, caption = 192, 18
    sheet = np.full((rows * (tile + caption), columns * tile, 3), 32, np.uint8)
    for slot, index in enumerate(chosen):
        top, left = (slot // columns) * (tile + caption), (slot % columns) * tile
        sheet[top : top + tile, left : left + tile] = _outlined(samples[index], tile)
        text = "+".join(plan[index].families) or "good"
        cv2.putText(
            sheet,
            text,
            (left + 4, top + tile + 13),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
    used_rows = max(1, -(-len(chosen) // columns))
    write_png(path, sheet[: used_rows * (tile + caption)])


def _pick_for_sheet(plan: list[LabeledPlanEntry], slots: int) -> list[int]:
    first_of_family: dict[str, int] = {}
    for index, entry in enumerate(plan):
        for family in entry.families:
            first_of_family.setdefault(family, index)
    good = [i for i, entry in enumerate(plan) if not entry.families][:2]
    chosen = list(dict.fromkeys([*first_of_family.values(), *good, *range(len(plan))]))
    return chosen[:slots]


def _outlined(sample: SyntheticSample, tile: int) -> np.ndarray:
    image = cv2.resize(sample.image, (tile, tile), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(sample.mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
    # Outline a little outside the mask, so the line does not hide the defect it marks.
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(image.copy(), contours, -1, (255, 40, 40), 1, cv2.LINE_AA)
