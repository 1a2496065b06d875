"""Reference tokens (DenseDINO): point queries that ride along a ViT forward without disturbing it.

A reference token stands for one physical point of the scene seen in a view. Its content is a constant
(zero, or one learned vector shared by all points) and its position code is the patch position grid
sampled at the point's normalized view coordinates, so the token "asks" what the network sees there.
A reference token reads the patches and itself only, and no other token reads a reference token: the
plain ViT outputs are those of a forward without reference tokens.

Two exact implementations of that rule:
- "masked" (the paper's formulation): the tokens sit right after the class token and an additive mask
  blocks the forbidden pairs. Any mask rules out the flash-attention kernels, so every block's whole
  attention runs on a slower kernel.
- "split" (the default): the tokens go at the end of the sequence; each block runs the unmasked
  attention of [class, patches] (flash-eligible, the very call of a plain forward) and a small
  explicit attention of the R reference queries over the patch keys plus each token's own key. The
  per-token parts of a block (norms, projections, MLP, stochastic depth) run on the whole sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

ReferenceAttention = Literal["split", "masked"]
REFERENCE_ATTENTION: tuple[str, ...] = get_args(ReferenceAttention)
BlockFn = Callable[[Block, torch.Tensor, int, int], torch.Tensor]


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
    vit: VisionTransformer,
    images: torch.Tensor,
    points: torch.Tensor,
    ref_content: torch.Tensor,
    *,
    attention: ReferenceAttention = "split",
    block_fn: BlockFn | None = None,
) -> TokenOutputs:
    """Run the ViT on `images` with one reference token per point.

    Args:
        vit: A timm VisionTransformer (`dynamic_img_size=True` for non-base input sizes).
        images: `[B, 3, H, W]` normalized images.
        points: `[B, R, 2]` normalized (x, y) coordinates, already mirrored for flipped views.
        ref_content: `[D]` content vector shared by all reference tokens (zeros by default).
        attention: "split" or "masked" (same result; see the module docstring).
        block_fn: What runs one block in the split form (a compiled `reference_block`, say).

    Returns:
        Class, reference and patch tokens after the final norm.
    """
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)  # [B, prefix + N, D], class token first
    num_prefix = vit.num_prefix_tokens
    refs = ref_content.to(x.dtype) + reference_position_codes(vit, points).to(x.dtype)
    num_refs = points.shape[1]
    if attention == "masked":
        return _masked_forward(vit, x, refs)
    if attention != "split":
        raise ValueError(f"unknown reference attention {attention!r}; expected one of {REFERENCE_ATTENTION}")
    x = vit.norm_pre(vit.patch_drop(torch.cat([x, refs], dim=1)))
    run_block = block_fn or reference_block
    for block in vit.blocks:
        x = run_block(block, x, num_prefix, num_refs)
    x = vit.norm(x)
    main = x.shape[1] - num_refs
    return TokenOutputs(cls=x[:, 0], refs=x[:, main:], patches=x[:, num_prefix:main])


def _masked_forward(vit: VisionTransformer, x: torch.Tensor, refs: torch.Tensor) -> TokenOutputs:
    num_prefix, num_refs = vit.num_prefix_tokens, refs.shape[1]
    x = torch.cat([x[:, :num_prefix], refs, x[:, num_prefix:]], dim=1)
    x = vit.norm_pre(vit.patch_drop(x))
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


def reference_block(block: Block, x: torch.Tensor, num_prefix: int, num_refs: int) -> torch.Tensor:
    """One timm `Block` on [prefix, patches, refs] with the reference-token attention rule (split form)."""
    x = x + block.drop_path1(block.ls1(_split_attention(block.attn, block.norm1(x), num_prefix, num_refs)))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def _split_attention(attn: nn.Module, x: torch.Tensor, num_prefix: int, num_refs: int) -> torch.Tensor:
    """timm `Attention` on [prefix, patches, refs]: plain attention for the first part, refs read patches + self."""
    batch, length, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    main = length - num_refs
    dropout = attn.attn_drop.p if attn.training else 0.0
    plain = F.scaled_dot_product_attention(q[:, :, :main], k[:, :, :main], v[:, :, :main], dropout_p=dropout)
    # The R reference queries: logits over the patch keys and over each token's own key, one softmax.
    q_refs = q[:, :, main:] * attn.scale
    k_patches, v_patches = k[:, :, num_prefix:main], v[:, :, num_prefix:main]
    patch_logits = q_refs @ k_patches.transpose(-2, -1)  # [B, H, R, N]
    self_logits = (q_refs * k[:, :, main:]).sum(dim=-1, keepdim=True)  # [B, H, R, 1]
    weights = torch.cat([patch_logits, self_logits], dim=-1).float().softmax(dim=-1).to(v.dtype)
    weights = attn.attn_drop(weights)
    refs = weights[..., :-1] @ v_patches + weights[..., -1:] * v[:, :, main:]
    out = torch.cat([plain, refs], dim=2).transpose(1, 2).reshape(batch, length, -1)
    out = attn.norm(out) if hasattr(attn, "norm") else out
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


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
