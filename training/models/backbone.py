"""The ViT backbone: building it from a timm name, saving it, and loading it for downstream use.

The backbone is always a plain timm `VisionTransformer` without a classifier (`num_classes=0`), built
with `pretrained=False`: every weight this product uses comes from its own pretraining. Reference
tokens (see `training.models.reference_tokens`) are a training-time device only; a saved backbone
needs nothing beyond timm to run.

`backbone.pt` is a dict::

    {"arch": str, "img_size": int, "patch_size": int, "objective": str,
     "model_kwargs": dict, "state_dict": the teacher's ViT weights}

`model_kwargs` holds constructor overrides (e.g. `depth` for tiny test models); it is empty for the
standard timm architectures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from training.data.normalisation import PIXEL_MEAN, PIXEL_STD  # noqa: F401 - re-exported for research code
from training.errors import UserError

BACKBONE_FILE = "backbone.pt"
RANDOM_PREFIX = "random:"


def create_vit(
    arch: str,
    *,
    img_size: int,
    drop_path_rate: float = 0.0,
    model_kwargs: dict[str, Any] | None = None,
) -> VisionTransformer:
    """Build a randomly initialised timm ViT without classifier.

    Args:
        arch: A timm ViT name, e.g. `vit_small_patch16_224`.
        img_size: The base input size; the patch position grid is `img_size / patch_size` square.
        drop_path_rate: Stochastic depth rate (training only).
        model_kwargs: Constructor overrides such as `depth` or `patch_size`.

    Raises:
        UserError: `arch` is not a timm model name or not a VisionTransformer.
    """
    if arch not in timm.list_models():
        raise UserError(
            f"unknown architecture {arch!r} (expected a timm ViT name such as vit_small_patch16_224)"
        )
    # dynamic_img_size lets one model take the global and the local crop sizes; the position grid is
    # resampled per input size.
    model = timm.create_model(
        arch,
        pretrained=False,
        img_size=img_size,
        num_classes=0,
        dynamic_img_size=True,
        drop_path_rate=drop_path_rate,
        **(model_kwargs or {}),
    )
    if not isinstance(model, VisionTransformer):
        raise UserError(f"architecture {arch!r} is not a VisionTransformer")
    return model


def patch_size_of(model: VisionTransformer) -> int:
    """The (square) patch size of a ViT."""
    return int(model.patch_embed.patch_size[0])


def save_backbone(
    path: Path | str,
    model: VisionTransformer,
    *,
    arch: str,
    img_size: int,
    objective: str,
    model_kwargs: dict[str, Any] | None = None,
) -> None:
    """Write `model`'s weights as a `backbone.pt` that `load_backbone` reads."""
    payload = {
        "arch": arch,
        "img_size": int(img_size),
        "patch_size": patch_size_of(model),
        "objective": objective,
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated backbone


def load_backbone(spec: str | Path, *, img_size: int | None = None) -> VisionTransformer:
    """Load a pretrained backbone, or build the random-init baseline.

    Args:
        spec: A pretrain run directory (holding `backbone.pt`), a `backbone.pt` file, or
            `random:<timm arch>` for a randomly initialised model.
        img_size: Base input size of the returned model; defaults to the size it was pretrained at
            (224 for `random:`). The position grid is resampled when it differs.

    Returns:
        A timm `VisionTransformer` with `num_classes=0` and `dynamic_img_size=True`, in eval mode.

    Raises:
        UserError: The spec names nothing loadable.
    """
    text = str(spec)
    if text.startswith(RANDOM_PREFIX):
        model = create_vit(text[len(RANDOM_PREFIX) :], img_size=img_size or 224)
        return model.eval()
    payload = _read_backbone_file(_backbone_path(Path(spec)))
    model = create_vit(
        payload["arch"], img_size=payload["img_size"], model_kwargs=payload.get("model_kwargs") or {}
    )
    model.load_state_dict(payload["state_dict"])
    if img_size is not None and img_size != payload["img_size"]:
        model.set_input_size(img_size=img_size)
    return model.eval()


def _backbone_path(path: Path) -> Path:
    if path.is_dir():
        path = path / BACKBONE_FILE
    if not path.is_file():
        raise UserError(
            f"no backbone at {path} (expected a pretrain run folder, a backbone.pt or random:<arch>)"
        )
    return path


def _read_backbone_file(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{path} is not a readable backbone file ({type(error).__name__})") from None
    missing = {"arch", "img_size", "state_dict"} - set(payload if isinstance(payload, dict) else ())
    if missing:
        raise UserError(f"{path} is not a backbone file (missing {', '.join(sorted(missing))})")
    return payload
