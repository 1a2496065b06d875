"""Reference tokens (DenseDINO): point queries that ride along a ViT forward without disturbing it.

A reference token stands for one physical point of the scene seen in a view. Its content is a constant
(zero, or one learned vector shared by all points) and its position code is the patch position grid
sampled at the point's normalized view coordinates, so the token "asks" what the network sees there.
Tokens are placed right after the class token. The attention mask lets a reference token read the
patches and itself only, and hides every reference token from the class token and the patches: the
plain ViT outputs are bit-for-bit those of a forward without reference tokens.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer


class TokenOutputs(NamedTuple):
    """Final-norm outputs of a forward with reference tokens."""

    cls: torch.Tensor  # [B, D]
    refs: torch.Tensor  # [B, R, D]
    patches: torch.Tensor  # [B, N, D]


def patch_position_grid(vit: VisionTransformer) -> torch.Tensor:
    """The learned patch position embedding as an image `[1, D, Gh, Gw]` (prefix entries dropped)."""
    first_patch = 0 if vit.no_embed_class else vit.num_prefix_tokens
    grid_h, grid_w = vit.patch_embed.grid_size
    patch_pos = vit.pos_embed[:, first_patch:]
    return patch_pos.reshape(1, grid_h, grid_w, -1).permute(0, 3, 1, 2)


def reference_position_codes(vit: VisionTransformer, points: torch.Tensor) -> torch.Tensor:
    """Sample the patch position grid at normalized view coordinates.

    Args:
        vit: The backbone whose position embedding is sampled.
        points: `[B, R, 2]` (x, y) in [-1, 1] of each view (align_corners=False convention: -1 and 1
            are the outer image edges, so a point maps to the same spot at any view resolution).

    Returns:
        `[B, R, D]` position codes. Bicubic sampling with border padding: points near an edge get the
        edge's code rather than a blend with zeros.
    """
    grid = patch_position_grid(vit).float()
    batch = points.shape[0]
    sampled = F.grid_sample(
        grid.expand(batch, -1, -1, -1),
        points.float().unsqueeze(1),  # [B, 1, R, 2]
        mode="bicubic",
        padding_mode="border",
        align_corners=False,
    )  # [B, D, 1, R]
    return sampled.squeeze(2).transpose(1, 2).to(vit.pos_embed.dtype)


@lru_cache(maxsize=16)
def reference_attention_mask(
    num_prefix: int, num_refs: int, num_patches: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive mask `[1, 1, L, L]` (rows are queries) for the sequence [prefix, refs, patches].

    Every query is blocked from all reference columns; reference rows are also blocked from the
    prefix (class) columns; then each reference token may attend to itself. No row is fully masked.
    The mask is cached: a run meets only a few token layouts, so it is built once per layout
    instead of on every forward. Callers must not modify it in place.
    """
    length = num_prefix + num_refs + num_patches
    refs = slice(num_prefix, num_prefix + num_refs)
    blocked = torch.zeros(length, length, dtype=torch.bool, device=device)
    blocked[:, refs] = True
    blocked[refs, :num_prefix] = True
    ref_index = torch.arange(num_prefix, num_prefix + num_refs, device=device)
    blocked[ref_index, ref_index] = False
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    mask.masked_fill_(blocked, float("-inf"))
    return mask[None, None]


def forward_with_references(
    vit: VisionTransformer, images: torch.Tensor, points: torch.Tensor, ref_content: torch.Tensor
) -> TokenOutputs:
    """Run the ViT on `images` with one reference token per point.

    Args:
        vit: A timm VisionTransformer (`dynamic_img_size=True` for non-base input sizes).
        images: `[B, 3, H, W]` normalized images.
        points: `[B, R, 2]` normalized (x, y) coordinates, already mirrored for flipped views.
        ref_content: `[D]` content vector shared by all reference tokens (zeros by default).

    Returns:
        Class, reference and patch tokens after the final norm.
    """
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)  # [B, prefix + N, D], class token first
    num_prefix = vit.num_prefix_tokens
    refs = ref_content.to(x.dtype) + reference_position_codes(vit, points).to(x.dtype)
    x = torch.cat([x[:, :num_prefix], refs, x[:, num_prefix:]], dim=1)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    num_refs = points.shape[1]
    num_patches = x.shape[1] - num_prefix - num_refs
    mask = reference_attention_mask(
        num_prefix, num_refs, num_patches, dtype=_attention_dtype(x), device=x.device
    )
    for block in vit.blocks:
        x = block(x, attn_mask=mask)
    x = vit.norm(x)
    return TokenOutputs(
        cls=x[:, 0], refs=x[:, num_prefix : num_prefix + num_refs], patches=x[:, num_prefix + num_refs :]
    )


def plain_forward(vit: VisionTransformer, images: torch.Tensor) -> TokenOutputs:
    """The ordinary ViT forward, in the same output layout (no reference tokens)."""
    x = vit.forward_features(images)
    num_prefix = vit.num_prefix_tokens
    return TokenOutputs(cls=x[:, 0], refs=x[:, :0], patches=x[:, num_prefix:])


def _attention_dtype(x: torch.Tensor) -> torch.dtype:
    # Fused attention needs the mask in the dtype of q/k, which under autocast is the autocast dtype.
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype
