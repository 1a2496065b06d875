"""The network that is trained (student) and its EMA copy (teacher): backbone + class head + point head."""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from training.models.reference_tokens import (
    BlockFn,
    ReferenceAttention,
    forward_with_references,
    plain_forward,
    reference_block,
)


class GroupOutputs(NamedTuple):
    """Outputs for one group of same-size views."""

    cls: torch.Tensor  # [N, K] class-head outputs
    points: torch.Tensor | None  # [N, R, K] point-head outputs of the reference tokens
    features: torch.Tensor  # [N, D] backbone class tokens (collapse monitors)


class SelfDistillationNet(nn.Module):
    """Backbone with a class-token head and, for the dense objectives, a reference-token head.

    Args:
        backbone: A timm ViT (`dynamic_img_size=True`).
        cls_head: Head on the class token.
        point_head: Head on reference tokens; None for image-level objectives.
        learned_ref_content: Reference tokens carry one learned vector instead of zeros.
        reference_attention: How blocks apply the reference-token rule ("split" or "masked").
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        cls_head: nn.Module,
        point_head: nn.Module | None = None,
        learned_ref_content: bool = False,
        reference_attention: ReferenceAttention = "split",
    ) -> None:
        super().__init__()
        self.backbone, self.cls_head, self.point_head = backbone, cls_head, point_head
        self.reference_attention = reference_attention
        self.reference_block: BlockFn = reference_block
        content = torch.zeros(backbone.embed_dim)
        if learned_ref_content:
            self.ref_content = nn.Parameter(content)
        else:
            self.register_buffer("ref_content", content)

    def forward(self, groups: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[GroupOutputs]:
        """Run each group `(images [N, 3, S, S], points [N, R, 2] or None)` through one batched forward."""
        return [self._forward_group(images, points) for images, points in groups]

    def _forward_group(self, images: torch.Tensor, points: torch.Tensor | None) -> GroupOutputs:
        if points is None or self.point_head is None:
            tokens = plain_forward(self.backbone, images)
            return GroupOutputs(self.cls_head(tokens.cls), None, tokens.cls)
        tokens = forward_with_references(
            self.backbone,
            images,
            points,
            self.ref_content,
            attention=self.reference_attention,
            block_fn=self.reference_block,
        )
        return GroupOutputs(self.cls_head(tokens.cls), self.point_head(tokens.refs), tokens.cls)


def make_teacher(student: SelfDistillationNet) -> SelfDistillationNet:
    """A frozen copy of the student that only moves by `ema_update`."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student, in one fused multi-tensor op."""
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)


def compile_blocks(net: SelfDistillationNet) -> None:
    """torch.compile each transformer block in place (where nearly all FLOPs are).

    Compiling block by block keeps parameter names (checkpoints stay plain), compiles one graph
    reused by every block, and leaves the irregular parts (reference-token sampling, heads, losses)
    eager. The split reference-token block (a function over a block) is compiled the same way.
    """
    # Blocks differ in their stochastic-depth rate and each is seen with and without a mask, so the
    # cache must hold a few graphs per block instead of recompiling forever.
    limit = 4 * len(net.backbone.blocks)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
    torch._dynamo.config.accumulated_cache_size_limit = max(
        torch._dynamo.config.accumulated_cache_size_limit, 4 * limit
    )
    for block in net.backbone.blocks:
        block.compile()
    net.reference_block = torch.compile(reference_block)
