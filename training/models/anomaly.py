"""Zero-label anomaly maps: nearest-neighbour distance to a memory bank of normal patch features.

In the manner of PatchCore (Roth et al., 2022): patch features of defect-free images, each averaged
with its 3x3 neighbourhood so a feature describes a little context, are collected in a memory bank,
greedily subsampled to a fixed-size coreset that still covers them (k-center), and a test patch
scores its distance to the nearest bank entry. The map is upsampled to pixels, smoothed, and turned
into a probability-like value with a logistic fitted on normal statistics.

Two feature sources:
- "vit": the backbone's patch tokens (mid-level blocks), one feature per 16 px patch. What the
  zero-label mode has before any label exists.
- "conv": the fine-tuned head's conv encoder at 1/2 resolution, one feature per 2 px. A thin scratch
  fills a few percent of a 16 px patch but a whole 2 px cell, and the encoder, trained on the labeled
  defect types, describes local structure that also tells unlabeled types apart (docs/BENCHMARKS.md
  §2, journal §3). The hybrid model uses it.

One bank for everything is the textbook form, but one model often serves several surfaces (lines,
materials): a patch of line B's material pasted into line A's part is then perfectly "normal", since
line B's patches sit in the same bank. So by default the bank is kept per normal *tile*, with each
tile's feature statistics (mean and standard deviation per channel) as its key, and a query tile is
scored only against the banks of the few normal tiles most like it (in the manner of SPADE, Cohen &
Hoshen, 2020, which first retrieves the nearest normal images): the test asks "is this patch normal
*for this surface*?". `neighbour_tiles = 0` keeps the single bank.

A bank row describes a position's 3x3 neighbourhood. That sees a scratch or a pit, but not a large,
low-contrast defect (a foreign texture blended in, a cut-and-paste patch): inside it every 3x3 window
looks like some normal window. With `context` K a row also carries the mean and standard deviation
of the features over the surrounding KxK window, i.e. the local texture statistics, which such a
defect does change.

Learned features describe structure. A defect that only changes brightness or colour, such as a pale
stain on gravel, leaves edge-like filters nearly unmoved, and was missed by both branches (frame AUROC
near 0.5). With `pixel_weight` W the features also carry the image's own pixels (normalised RGB,
averaged down to the feature grid, times W), so the rows' 3x3 means and window statistics see them too.

Everything in `AnomalyHead.forward` is plain tensor algebra, so the bank is a constant of the
exported graph and the nearest-neighbour search is MatMul + ReduceMin (retrieval adds TopK and
Gather): d²(a, b) = ‖a‖² − 2 a·b + ‖b‖².
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from training.models.segmentation import default_feature_blocks, separable_window_mean

# The logistic maps the normal score at this quantile to probability 0.5 ...
CALIBRATION_QUANTILE = 0.99
# ... and the normal median to this probability, which fixes its slope without a free parameter.
MEDIAN_PROBABILITY = 0.05


AnomalySource = Literal["vit", "conv"]
ANOMALY_SOURCES: tuple[str, ...] = get_args(AnomalySource)
# Smoothing of the upsampled distance map, in pixels: about a quarter of a 16 px patch, one conv cell.
DEFAULT_BLUR = {"vit": 4.0, "conv": 2.0}

# The hybrid's default texture context (chosen on the demo data's label study, docs/BENCHMARKS.md §2):
# on the head's conv features, the texture statistics of a wide window (30 px at 1/2 resolution) let
# large low-contrast defects stand out; wider windows did no better. `--anomaly-context 0` keeps the
# plain rows. ViT tokens (one per 16 px) were never measured with it, so they keep the plain 3x3 rows.
DEFAULT_CONTEXT: dict[str, int] = {"conv": 15, "vit": 0}


def default_context(features: str, context: int | None) -> int:
    """The context window given, or the default for `features`."""
    return DEFAULT_CONTEXT.get(features, 0) if context is None else context


# The hybrid's default weight of the image's own pixels in the bank rows (`AnomalyHead.with_pixels`):
# brightness-only defects (pale stains) that edge-like features miss stand out, while a larger weight
# starts to trade overlap (AUPRO) for ranking (docs/BENCHMARKS.md §2, journal §3). ViT tokens were
# never measured with them, so they keep none; `--anomaly-pixel-weight 0` is off.
DEFAULT_PIXEL_WEIGHT: dict[str, float] = {"conv": 4.0, "vit": 0.0}


def default_pixel_weight(features: str, weight: float | None) -> float:
    """The pixel weight given, or the default for `features`."""
    return DEFAULT_PIXEL_WEIGHT.get(features, 0.0) if weight is None else float(weight)


def neighbourhood_mean(features: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Average each position of `[N, C, h, w]` with its 3x3 neighbours (borders: the neighbours that exist).

    With `stride` 2 only every other position (in each direction) is kept: a quarter of the queries,
    each still covering its neighbours, so nothing between two kept positions goes unseen.
    """
    return F.avg_pool2d(features, kernel_size=3, stride=stride, padding=1, count_include_pad=False)


def window_statistics(features: torch.Tensor, window: int, stride: int = 1) -> torch.Tensor:
    """Mean and standard deviation of `[N, C, h, w]` over each position's `window`x`window` neighbours: `[N, 2C, h', w']`.

    Same borders and stride as `neighbourhood_mean`, so both maps align position for position.
    The variance is E[x²] − E[x]² (average pools, which export as AveragePool), clamped at zero
    against rounding.
    """
    moments = torch.cat([features, features * features], dim=1)
    pooled = separable_window_mean(moments, window, stride)
    mean, mean_of_squares = pooled.chunk(2, dim=1)
    variance = (mean_of_squares - mean * mean).clamp_min(0.0)
    return torch.cat([mean, variance.sqrt()], dim=1)


def greedy_coreset(
    features: torch.Tensor, size: int, *, projection_dim: int = 128, seed: int = 0
) -> torch.Tensor:
    """Indices of `size` rows of `features` [M, C] chosen by greedy k-center selection.

    Each step adds the row farthest from everything chosen so far, so the coreset covers the bank's
    whole extent (rare normal patterns included) rather than its dense middle. Distances are taken in
    a random projection to `projection_dim` dimensions, which preserves them well enough and makes
    the selection much cheaper.
    """
    count = features.shape[0]
    if size >= count:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    projected = features.float()
    if features.shape[1] > projection_dim:
        projection = torch.randn(features.shape[1], projection_dim, generator=generator) / math.sqrt(
            projection_dim
        )
        projected = projected @ projection.to(features.device)
    first = int(torch.randint(count, (1,), generator=generator))
    chosen = [first]
    min_dist = torch.cdist(projected, projected[first : first + 1]).squeeze(1)
    for _ in range(size - 1):
        farthest = int(torch.argmax(min_dist))
        chosen.append(farthest)
        min_dist = torch.minimum(
            min_dist, torch.cdist(projected, projected[farthest : farthest + 1]).squeeze(1)
        )
    return torch.tensor(chosen, dtype=torch.long)


class NearestNeighbourScorer(nn.Module):
    """Distance of each patch feature to its nearest memory-bank row: `[N, C, h, w]` → `[N, 1, h, w]`.

    min_b ‖q − b‖² = ‖q‖² + min_b (‖b‖² − 2 q·b), and the bracket is one MatMul of [q, 1] with the
    stacked [−2 bᵀ; ‖b‖²]: the [queries × bank] matrix, by far the largest tensor of the branch, is
    written once and read once by the min, instead of passing through three element-wise ops first.
    """

    def __init__(self, memory_bank: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("memory_bank", memory_bank.float().contiguous())
        self.register_buffer("bank_sq_norm", memory_bank.float().pow(2).sum(dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        stacked = torch.cat([-2.0 * self.memory_bank.t(), self.bank_sq_norm[None]], dim=0)  # [C + 1, K]
        augmented = torch.cat([queries, torch.ones_like(queries[..., :1])], dim=-1)  # [N, hw, C + 1]
        nearest = (augmented @ stacked).min(dim=-1).values + queries.pow(2).sum(dim=-1)
        return nearest.clamp_min(0.0).sqrt().reshape(n, 1, h, w)


def tile_descriptor(features: torch.Tensor) -> torch.Tensor:
    """What a tile's surface looks like, position aside: `[N, C, h, w]` → per-channel mean and std `[N, 2C]`."""
    flat = features.flatten(2)
    mean = flat.mean(dim=-1)
    std = (flat - mean[..., None]).pow(2).mean(dim=-1).sqrt()
    return torch.cat([mean, std], dim=1)


class TileRetrievalScorer(nn.Module):
    """Nearest-neighbour distance within the banks of the `neighbours` normal tiles most like the query tile.

    Args:
        tile_banks: `[G, P, C]`: P normal features of each of G normal tiles.
        descriptors: `[G, 2C]`: each tile's `tile_descriptor`.
        neighbours: how many tiles' banks a query tile is scored against.
    """

    def __init__(self, tile_banks: torch.Tensor, descriptors: torch.Tensor, neighbours: int) -> None:
        super().__init__()
        groups, _, channels = tile_banks.shape
        if descriptors.shape != (groups, 2 * channels):
            raise ValueError(
                f"descriptors {tuple(descriptors.shape)} do not fit tile banks {tuple(tile_banks.shape)}"
            )
        if not 1 <= neighbours <= groups:
            raise ValueError(f"neighbours must be in 1..{groups}, got {neighbours}")
        self.neighbours = int(neighbours)
        banks = tile_banks.float()
        # Per tile, the stacked [−2 bᵀ; ‖b‖²] of `NearestNeighbourScorer`: [G, C + 1, P].
        self.register_buffer(
            "stacked", torch.cat([-2.0 * banks.transpose(1, 2), banks.pow(2).sum(-1)[:, None]], dim=1)
        )
        self.register_buffer("descriptors", descriptors.float().contiguous())
        self.register_buffer("descriptor_sq_norm", descriptors.float().pow(2).sum(dim=1))

    @property
    def tile_banks(self) -> torch.Tensor:
        return -0.5 * self.stacked[:, :-1].transpose(1, 2)

    def nearest_tiles(self, features: torch.Tensor) -> torch.Tensor:
        """Indices `[N, neighbours]` of the normal tiles whose descriptors are closest to each query tile's."""
        query = tile_descriptor(features)
        distance = (
            self.descriptor_sq_norm[None] - 2.0 * query @ self.descriptors.t()
        )  # + ‖query‖², same per row
        return distance.topk(self.neighbours, dim=1, largest=False).indices

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        chosen = self.stacked[self.nearest_tiles(features)]  # [N, k, C + 1, P]
        rows = chosen.permute(0, 2, 1, 3).reshape(n, c + 1, -1)  # [N, C + 1, k·P]
        queries = features.reshape(n, c, h * w).transpose(1, 2)  # [N, hw, C]
        augmented = torch.cat([queries, torch.ones_like(queries[..., :1])], dim=-1)
        nearest = (augmented @ rows).min(dim=-1).values + queries.pow(2).sum(dim=-1)
        return nearest.clamp_min(0.0).sqrt().reshape(n, 1, h, w)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(math.ceil(3.0 * sigma), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


class AnomalyHead(nn.Module):
    """Memory bank + calibration: a feature map → anomaly probability `[N, 1, T, T]`.

    Args:
        memory_bank: coreset of normal features: one bank `[K, C]`, or one per normal tile `[G, P, C]`.
        feature_blocks: ViT blocks whose tokens form the features (source "vit"; kept for "conv" too,
            where they are what the segmentation head reads).
        source: "vit" or "conv" (see the module docstring); `InspectionModel` builds the features.
        blur_sigma: gaussian smoothing of the upsampled map, in pixels (default per source).
        stride: keep every `stride`-th position of the averaged feature map (fewer queries to score).
        descriptors: with per-tile banks, each tile's `tile_descriptor` `[G, 2C]` (zeros until filled).
        neighbour_tiles: with per-tile banks, how many tiles' banks a query tile is scored against.
        context: 0, or an odd window K ≥ 3: rows also carry the KxK mean and standard deviation
            (`window_statistics`), three times the channels.
        pixel_weight: 0, or the weight of the image's own pixels (normalised RGB, averaged down to the
            feature grid) appended to the features `InspectionModel` hands the head: see
            `with_pixels`.
    """

    def __init__(
        self,
        memory_bank: torch.Tensor,
        feature_blocks: Sequence[int],
        *,
        source: AnomalySource = "vit",
        blur_sigma: float | None = None,
        stride: int = 1,
        descriptors: torch.Tensor | None = None,
        neighbour_tiles: int = 0,
        context: int = 0,
        pixel_weight: float = 0.0,
    ) -> None:
        super().__init__()
        check_context(context)
        check_pixel_weight(pixel_weight)
        if source not in ANOMALY_SOURCES:
            raise ValueError(f"unknown anomaly feature source {source!r}; expected one of {ANOMALY_SOURCES}")
        blur_sigma = DEFAULT_BLUR[source] if blur_sigma is None else blur_sigma
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.feature_blocks = tuple(int(b) for b in feature_blocks)
        self.source, self.stride, self.context = source, int(stride), int(context)
        self.pixel_weight = float(pixel_weight)
        self.register_buffer("blur_kernel", gaussian_kernel1d(blur_sigma))
        # Logistic calibration p = sigmoid((score - center) / scale), fitted by `calibrate`.
        self.register_buffer("center", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.config = {
            "feature_blocks": list(self.feature_blocks),
            "blur_sigma": float(blur_sigma),
            "source": source,
            "stride": int(stride),
            "context": int(context),
            "pixel_weight": float(pixel_weight),
        }
        self.set_memory_bank(memory_bank, descriptors, neighbour_tiles)  # adds the bank's shape to the config

    def forward(self, size: Sequence[int], features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.raw_score(size, features) - self.center) / self.scale)

    def raw_score(self, size: Sequence[int], features: torch.Tensor) -> torch.Tensor:
        """Uncalibrated per-pixel score of a feature map: upsampled, smoothed nearest-neighbour distance."""
        distances = self.scorer(self.local_features(features))
        upsampled = F.interpolate(distances, size=tuple(size), mode="bilinear", align_corners=False)
        return self._blur(upsampled)

    def local_features(self, features: torch.Tensor) -> torch.Tensor:
        """What the bank holds and a query is: each position averaged with its 3x3 neighbours, and with
        `context`, its wider window's texture statistics.

        Done here rather than by the caller so that, in an exported graph, it sits in the head's scope
        (which reduced-precision variants keep in float32).
        """
        local = neighbourhood_mean(features, self.stride)
        if not self.context:
            return local
        return torch.cat([local, window_statistics(features, self.context, self.stride)], dim=1)

    def with_pixels(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """`features` `[N, C, h, w]` with the images' pixels, averaged down to `h`x`w` and weighted, appended.

        Learned features describe structure; a change of brightness or colour alone (a pale stain on
        gravel) can leave them nearly unchanged, since edge-like filters answer little to an offset.
        The pixels themselves carry it, and with `context` so do their window mean and spread.
        """
        if not self.pixel_weight:
            return features
        factor = images.shape[-1] // features.shape[-1]
        pixels = F.avg_pool2d(images, kernel_size=factor) if factor > 1 else images
        return torch.cat([features, self.pixel_weight * pixels], dim=1)

    def set_memory_bank(
        self,
        memory_bank: torch.Tensor,
        descriptors: torch.Tensor | None = None,
        neighbour_tiles: int = 0,
    ) -> None:
        """Replace the bank (built after the head, from the features the head defines); see `__init__`
        and `TileRetrievalScorer` for the per-tile form."""
        device = self.center.device
        descriptors = None if descriptors is None else descriptors.to(device)
        self.scorer: NearestNeighbourScorer | TileRetrievalScorer = _make_scorer(
            memory_bank.to(device), descriptors, neighbour_tiles
        )
        self.config["bank_shape"] = list(memory_bank.shape)
        self.config["neighbour_tiles"] = int(neighbour_tiles) if memory_bank.dim() == 3 else 0

    def calibrate(self, normal_scores: torch.Tensor) -> None:
        """Fit the logistic on raw scores of held-out normal pixels (never those the bank was built from)."""
        flat = normal_scores.detach().flatten().float()
        if flat.numel() > 1_000_000:  # torch.quantile caps its input size; a subsample is plenty
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        center = torch.quantile(flat, CALIBRATION_QUANTILE)
        median = torch.quantile(flat, 0.5)
        logit_at_median = math.log(MEDIAN_PROBABILITY / (1.0 - MEDIAN_PROBABILITY))
        scale = ((median - center) / logit_at_median).clamp_min(1e-6)
        self.center.fill_(float(center))
        self.scale.fill_(float(scale))

    def _blur(self, maps: torch.Tensor) -> torch.Tensor:
        radius = self.blur_kernel.numel() // 2
        # Replicate padding: zero padding would darken the borders, where defects are as likely as anywhere.
        padded = F.pad(maps, (radius, radius, radius, radius), mode="replicate")
        horizontal = F.conv2d(padded, self.blur_kernel.view(1, 1, 1, -1))
        return F.conv2d(horizontal, self.blur_kernel.view(1, 1, -1, 1))


def check_context(context: int) -> None:
    """0 (off) or an odd window of at least 3 positions, so the window is centred on its position."""
    if context != 0 and (context < 3 or context % 2 == 0):
        raise ValueError(
            f"the anomaly context window must be 0 (off) or an odd size of at least 3, got {context}"
        )


def check_pixel_weight(weight: float) -> None:
    """0 (off) or positive; distances see only the weight's size, so a negative one is a slip, not a setting."""
    if weight < 0:
        raise ValueError(f"pixel_weight must be 0 (off) or positive, got {weight:g}")


def _make_scorer(
    memory_bank: torch.Tensor, descriptors: torch.Tensor | None, neighbour_tiles: int
) -> NearestNeighbourScorer | TileRetrievalScorer:
    """One bank `[K, C]` → plain nearest neighbour; per-tile banks `[G, P, C]` → retrieval first."""
    if memory_bank.dim() == 2:
        return NearestNeighbourScorer(memory_bank)
    if memory_bank.dim() != 3:
        raise ValueError(f"a memory bank is [K, C] or [G, P, C], got shape {tuple(memory_bank.shape)}")
    if descriptors is None:
        descriptors = memory_bank.new_zeros(memory_bank.shape[0], 2 * memory_bank.shape[2])
    return TileRetrievalScorer(memory_bank, descriptors, neighbour_tiles)


def anomaly_feature_blocks(depth: int) -> tuple[int, ...]:
    """Mid-level blocks: local enough to localise, abstract enough to ignore texture noise."""
    blocks = default_feature_blocks(depth)
    return blocks[:-1] if len(blocks) > 1 else blocks
