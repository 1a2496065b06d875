"""Per-pixel defect head: ViT patch features fused with a shallow full-resolution conv branch.

A 1-4 px scratch vanishes inside a 16 px patch token, so the ViT alone cannot draw it. The head is a
small U-Net whose encoder runs on the image itself at 1/1, 1/2 and 1/4 resolution; the ViT's patch
features (one or more blocks, projected by a 1x1 conv) are upsampled to 1/4 and concatenated there,
and the decoder climbs back to full resolution through the skip connections. The ViT says *what*
looks wrong, the conv branch says *exactly where*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from timm.layers import Format
from timm.models.vision_transformer import VisionTransformer
from torch import nn

# What a head learned from: labeled masks, or synthetic anomalies on normal images (a discriminator).
HeadTraining = Literal["labels", "synthetic"]


def fix_input_size(backbone: VisionTransformer, img_size: int) -> VisionTransformer:
    """Pin a ViT to one square input size, with its position grid resampled once, here.

    A fixed size keeps the position-embedding resampling out of the training step and out of the
    exported graph (the antialiased resample does not export cleanly).
    """
    backbone.set_input_size(img_size=(img_size, img_size))
    backbone.dynamic_img_size = False
    patch_embed = backbone.patch_embed
    patch_embed.strict_img_size = True
    patch_embed.flatten = True
    patch_embed.output_fmt = Format.NCHW
    return backbone


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """Three blocks spread over the second half and the end of the network (mid-level and semantic)."""
    return tuple(sorted({max(depth // 2 - 1, 0), max(3 * depth // 4 - 1, 0), depth - 1}))


def vit_feature_maps(
    backbone: VisionTransformer, images: torch.Tensor, blocks: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Patch-token maps `[N, D, H/p, W/p]` of the given blocks, keyed by block index, in one forward pass."""
    wanted = sorted(set(blocks))
    maps = backbone.forward_intermediates(images, indices=wanted, output_fmt="NCHW", intermediates_only=True)
    return dict(zip(wanted, maps, strict=True))


class EncodedImage(NamedTuple):
    """Encoder maps of the conv branch (the anomaly branch reads `half` too)."""

    full: torch.Tensor
    half: torch.Tensor
    quarter: torch.Tensor


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU; the first conv may stride to halve the resolution."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def separable_window_mean(maps: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """KxK window mean as a Kx1 pool then a 1xK pool: K + K reads per output instead of K², so a wider
    window costs little more. Exact, borders included: a window clipped by the border is a rectangle,
    and the mean over a rectangle is the mean of its column means."""
    half = window // 2
    columns = F.avg_pool2d(
        maps, kernel_size=(window, 1), stride=(stride, 1), padding=(half, 0), count_include_pad=False
    )
    return F.avg_pool2d(
        columns, kernel_size=(1, window), stride=(1, stride), padding=(0, half), count_include_pad=False
    )


# The head's TextureContext window, in 1/4-resolution cells (44 px): wide enough to see a surface's
# texture around a defect, chosen on the demo data's label study (docs/BENCHMARKS.md §2).
DEFAULT_HEAD_CONTEXT = 11


def default_head_context(window: int | None) -> int:
    """The head's texture-context window an option asks for: None means `DEFAULT_HEAD_CONTEXT`."""
    return DEFAULT_HEAD_CONTEXT if window is None else window


def check_head_context(window: int) -> None:
    """0 (no block) or an odd window of at least 3 cells."""
    if window and (window < 3 or window % 2 == 0):
        raise ValueError(
            f"the head's texture-context window must be 0 (off) or an odd size of at least 3, got {window}"
        )


class TextureContext(nn.Module):
    """Lets each 1/4-resolution position compare itself with its surroundings and with the whole tile.

    A large, low-contrast defect (another material blended in, a patch pasted from elsewhere) is
    defined by a texture that differs from the texture around it, over more pixels than the conv
    branch's 3x3 stack sees. This block concatenates, per position, the mean and standard deviation
    of the features over a `window`x`window` neighbourhood and their mean over the tile, and mixes
    them back to the input width with a 1x1 conv (average pools and a reduction: cheap, and they
    export as AveragePool / ReduceMean).
    """

    def __init__(self, channels: int, window: int) -> None:
        super().__init__()
        check_head_context(window)
        self.window = window
        self.mix = nn.Sequential(
            nn.Conv2d(4 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moments = separable_window_mean(torch.cat([x, x * x], dim=1), self.window, stride=1)
        mean, mean_of_squares = moments.chunk(2, dim=1)
        # The epsilon keeps sqrt's gradient finite where a window is flat.
        std = (mean_of_squares - mean * mean).clamp_min(0.0).add(1e-6).sqrt()
        tile_mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return self.mix(torch.cat([x, mean, std, tile_mean], dim=1))


class FusionDecoder(nn.Module):
    """The conv U-Net around the ViT features: image + patch maps → one logit per pixel.

    Args:
        vit_channels: channels of the concatenated ViT maps.
        widths: channels of the conv branch at 1/1, 1/2 and 1/4 resolution.
        vit_width: channels the ViT maps are projected to before fusion.
        context: window (in 1/4-resolution cells) of the `TextureContext` block after the fusion;
            0 leaves it out.
    """

    def __init__(
        self,
        vit_channels: int,
        *,
        widths: tuple[int, int, int] = (16, 32, 48),
        vit_width: int = 64,
        context: int = 0,
    ) -> None:
        super().__init__()
        full, half, quarter = widths
        self.enc_full = ConvBlock(3, full)
        self.enc_half = ConvBlock(full, half, stride=2)
        self.enc_quarter = ConvBlock(half, quarter, stride=2)
        self.vit_proj = nn.Sequential(
            nn.Conv2d(vit_channels, vit_width, 1), nn.BatchNorm2d(vit_width), nn.ReLU(inplace=True)
        )
        self.fuse_quarter = ConvBlock(quarter + vit_width, vit_width)
        self.context = TextureContext(vit_width, context) if context else nn.Identity()
        self.dec_half = ConvBlock(vit_width + half, half)
        self.dec_full = ConvBlock(half + full, full)
        self.to_logit = nn.Conv2d(full, 1, 1)

    def forward(self, images: torch.Tensor, vit_maps: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), vit_maps)

    def encode(self, images: torch.Tensor) -> EncodedImage:
        """The conv branch's encoder maps at 1/1, 1/2 and 1/4 resolution."""
        skip_full = self.enc_full(images)
        skip_half = self.enc_half(skip_full)
        return EncodedImage(skip_full, skip_half, self.enc_quarter(skip_half))

    def decode(self, encoded: EncodedImage, vit_maps: torch.Tensor) -> torch.Tensor:
        skip_full, skip_half, quarter = encoded
        vit = F.interpolate(
            self.vit_proj(vit_maps), size=quarter.shape[-2:], mode="bilinear", align_corners=False
        )
        x = self.context(self.fuse_quarter(torch.cat([quarter, vit], dim=1)))
        x = F.interpolate(x, size=skip_half.shape[-2:], mode="bilinear", align_corners=False)
        x = self.dec_half(torch.cat([x, skip_half], dim=1))
        x = F.interpolate(x, size=skip_full.shape[-2:], mode="bilinear", align_corners=False)
        x = self.dec_full(torch.cat([x, skip_full], dim=1))
        return self.to_logit(x)


class SegmentationHead(nn.Module):
    """`FusionDecoder` fed from chosen ViT blocks: images + block maps → defect logits `[N, 1, T, T]`.

    Args:
        embed_dim: the backbone's token width.
        feature_blocks: blocks whose patch tokens feed the decoder.
        widths: conv-branch channels at 1/1, 1/2, 1/4 resolution.
        vit_width: channels of the projected ViT features.
        context: `TextureContext` window at 1/4 resolution (0: none).
        trained_on: "labels" (labeled defect masks) or "synthetic" (synthetic anomalies on normal images
            only: a discriminator, which keeps a model zero-label).
    """

    def __init__(
        self,
        embed_dim: int,
        feature_blocks: Sequence[int],
        *,
        widths: Sequence[int] = (16, 32, 48),
        vit_width: int = 64,
        context: int = 0,
        trained_on: HeadTraining = "labels",
    ) -> None:
        super().__init__()
        if trained_on not in get_args(HeadTraining):
            raise ValueError(f"trained_on must be one of {get_args(HeadTraining)}, not {trained_on!r}")
        self.trained_on = trained_on
        self.feature_blocks = tuple(int(b) for b in feature_blocks)
        full, half, quarter = (int(w) for w in widths)
        self.decoder = FusionDecoder(
            embed_dim * len(self.feature_blocks),
            widths=(full, half, quarter),
            vit_width=vit_width,
            context=context,
        )
        self.config = {
            "feature_blocks": list(self.feature_blocks),
            "widths": [full, half, quarter],
            "vit_width": vit_width,
            "context": int(context),
            "trained_on": trained_on,
        }

    @classmethod
    def from_config(cls, embed_dim: int, config: dict[str, Any]) -> SegmentationHead:
        """The head that `config` (a saved `self.config`) describes; runs saved before the context block have none."""
        return cls(
            embed_dim,
            config["feature_blocks"],
            widths=config["widths"],
            vit_width=config["vit_width"],
            context=config.get("context", 0),
            trained_on=config.get("trained_on", "labels"),  # runs saved before discriminators: labels
        )

    def forward(self, images: torch.Tensor, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.decode(self.encode(images), maps)

    def encode(self, images: torch.Tensor) -> EncodedImage:
        return self.decoder.encode(images)

    def decode(self, encoded: EncodedImage, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        vit_maps = torch.cat([maps[b] for b in self.feature_blocks], dim=1)
        return self.decoder.decode(encoded, vit_maps)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
