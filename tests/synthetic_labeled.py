"""A tiny labeled set drawn with numpy: noisy textures, thin dark lines as defects."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from inspect_svc.labeled_layout import DefectsFile, SampleLabel, write_defects_file


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.normal(128, 12, size=(size, size, 1)) + np.linspace(-10, 10, size)[None, :, None]
    return np.clip(np.repeat(base, 3, axis=2), 0, 255).astype(np.uint8)


def write_labeled_set(
    root: Path, *, defective: int = 4, normal: int = 4, size: int = 48, seed: int = 0
) -> Path:
    """DIR/images, DIR/masks and DIR/defects.json; every defective image has one 2-px scratch."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = {}
    for index in range(defective + normal):
        stem = f"img{index:02d}"
        image = texture(rng, size)
        if index < defective:
            mask = np.zeros((size, size), np.uint8)
            start = tuple(int(v) for v in rng.integers(4, size // 3, 2))
            end = tuple(int(v) for v in rng.integers(2 * size // 3, size - 4, 2))
            cv2.line(mask, start, end, 255, 2)
            image[mask > 0] = 20
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            labels[stem] = SampleLabel(line="synthetic", defects=["scratch" if index % 2 else "crack"])
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image[:, :, ::-1])
    write_defects_file(root, DefectsFile(samples=labels))
    return root


def model_cli():
    """A typer app with only the model verbs (independent of the other verbs' modules)."""
    import typer

    from training.cli.model import register

    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    return app


TINY_BACKBONE = "random:vit_tiny_patch16_224"
TINY_FINETUNE_ARGS = ["--image-size", "32", "--steps", "3", "--batch-size", "4", "--bank-size", "32"]


def one_line_set(root: Path, *, size: int = 48) -> Path:
    """The synthetic labeled set with its defect-free images on the defects' line (benches work per line)."""
    data = write_labeled_set(root, defective=4, normal=4, size=size)
    labels = json.loads((data / "defects.json").read_text())
    for image in (data / "images").iterdir():
        labels["samples"].setdefault(image.stem, {"line": "synthetic", "defects": []})
    (data / "defects.json").write_text(json.dumps(labels))
    return data
