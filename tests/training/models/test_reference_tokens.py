"""Reference tokens leave the plain ViT path untouched and read the position grid where they point."""

from __future__ import annotations

import pytest
import torch

from training.models.backbone import create_vit, load_backbone, save_backbone
from training.models.reference_tokens import (
    forward_with_references,
    patch_position_grid,
    plain_forward,
    reference_attention_mask,
    reference_position_codes,
)

TINY = {"patch_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = create_vit("test_vit", img_size=32, model_kwargs=TINY).eval()
    with torch.no_grad():
        model.pos_embed.normal_()  # a non-trivial grid, so sampling errors would show
    return model


@pytest.mark.parametrize("attention", ["split", "masked"])
@pytest.mark.parametrize("size", [32, 16])
@pytest.mark.parametrize("content", ["zero", "learned"])
def test_class_and_patch_outputs_ignore_reference_tokens(
    vit, size: int, content: str, attention: str
) -> None:
    images = torch.randn(3, 3, size, size)
    points = torch.rand(3, 5, 2) * 2 - 1
    ref_content = torch.zeros(vit.embed_dim) if content == "zero" else torch.randn(vit.embed_dim)
    with torch.no_grad():
        plain = plain_forward(vit, images)
        with_refs = forward_with_references(vit, images, points, ref_content, attention=attention)
    torch.testing.assert_close(with_refs.cls, plain.cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_refs.patches, plain.patches, atol=1e-5, rtol=1e-5)
    assert with_refs.refs.shape == (3, 5, vit.embed_dim)


@pytest.mark.parametrize("attention", ["split", "masked"])
def test_reference_tokens_do_not_see_each_other(vit, attention: str) -> None:
    images = torch.randn(1, 3, 32, 32)
    points = torch.rand(1, 4, 2) * 2 - 1
    moved = points.clone()
    moved[0, 1:] = -moved[0, 1:]  # move every token but the first
    zeros = torch.zeros(vit.embed_dim)
    with torch.no_grad():
        first = forward_with_references(vit, images, points, zeros, attention=attention).refs[0, 0]
        again = forward_with_references(vit, images, moved, zeros, attention=attention).refs[0, 0]
        elsewhere = forward_with_references(vit, images, moved[:, 1:], zeros, attention=attention).refs[0, 0]
    torch.testing.assert_close(first, again, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first, elsewhere, atol=1e-3)


@pytest.mark.parametrize("model_kwargs", [TINY, {**TINY, "reg_tokens": 2, "qkv_bias": False}])
def test_split_attention_equals_the_masked_formulation(model_kwargs: dict) -> None:
    """The fast split form is the paper's masked attention computed another way: outputs and gradients agree."""
    torch.manual_seed(1)
    model = create_vit(
        "test_vit", img_size=32, model_kwargs=model_kwargs
    ).train()  # train mode: dropout paths on
    with torch.no_grad():
        model.pos_embed.normal_()
    images = torch.randn(2, 3, 32, 32)
    points = torch.rand(2, 6, 2) * 2 - 1
    content = torch.randn(model.embed_dim)
    results = {}
    for attention in ("split", "masked"):
        model.zero_grad()
        out = forward_with_references(model, images, points, content, attention=attention)
        (out.refs.square().sum() + out.cls.sum() + out.patches.mean()).backward()
        results[attention] = (out, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    (split, split_grads), (masked, masked_grads) = results["split"], results["masked"]
    for name in ("cls", "refs", "patches"):
        torch.testing.assert_close(getattr(split, name), getattr(masked, name), atol=2e-5, rtol=1e-5)
    assert len(split_grads) == len(masked_grads) > 0
    for a, b in zip(split_grads, masked_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_unknown_reference_attention_is_refused(vit) -> None:
    with pytest.raises(ValueError, match="reference attention"):
        forward_with_references(
            vit,
            torch.randn(1, 3, 32, 32),
            torch.zeros(1, 1, 2),
            torch.zeros(vit.embed_dim),
            attention="sparse",
        )


def test_mask_layout() -> None:
    mask = reference_attention_mask(1, 2, 3, dtype=torch.float32, device=torch.device("cpu"))[0, 0]
    allowed = torch.isfinite(mask)
    assert (
        not allowed[:, 1:3].logical_and(~torch.eye(6, dtype=torch.bool)[:, 1:3]).any()
    )  # refs only see themselves
    assert allowed[1, 1] and allowed[2, 2] and not allowed[1, 2]
    assert not allowed[1, 0] and allowed[1, 3:].all()  # a ref reads patches, not the class token
    assert allowed[0, 0] and allowed[0, 3:].all() and allowed[3:, 0].all()  # plain path fully open
    assert (mask[allowed] == 0).all()


def test_position_codes_hit_patch_centres(vit) -> None:
    grid = patch_position_grid(vit)[0]  # [D, 4, 4]
    # Patch (row 1, col 2) of a 4×4 grid has its centre at x = (2 + 0.5)/4·2 − 1, y = (1 + 0.5)/4·2 − 1.
    centre = torch.tensor([[[2.5 / 4 * 2 - 1, 1.5 / 4 * 2 - 1]]])
    with torch.no_grad():
        code = reference_position_codes(vit, centre)[0, 0]
    torch.testing.assert_close(code, grid[:, 1, 2], atol=1e-5, rtol=1e-5)


def test_backbone_round_trip(vit, tmp_path) -> None:
    save_backbone(
        tmp_path / "backbone.pt", vit, arch="test_vit", img_size=32, objective="densedino", model_kwargs=TINY
    )
    loaded = load_backbone(tmp_path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(images), vit.forward_features(images))
    assert load_backbone(tmp_path / "backbone.pt", img_size=64).patch_embed.grid_size == (8, 8)
    assert load_backbone("random:test_vit", img_size=64).num_classes == 0


@pytest.mark.parametrize("spec", ["random:not_a_model", "/nowhere/run"])
def test_load_backbone_bad_spec(spec: str) -> None:
    from training.errors import UserError

    with pytest.raises(UserError):
        load_backbone(spec)


def test_attention_mask_is_built_once_per_layout() -> None:
    cpu = torch.device("cpu")
    first = reference_attention_mask(1, 4, 16, dtype=torch.float32, device=cpu)
    assert reference_attention_mask(1, 4, 16, dtype=torch.float32, device=cpu) is first
    assert reference_attention_mask(1, 2, 16, dtype=torch.float32, device=cpu).shape[-1] == 19


def test_split_block_compiles_without_graph_breaks(vit) -> None:
    """`compile_blocks` compiles the split block on the GPU; a graph break there would cost every step."""
    from training.models.reference_tokens import reference_block

    compiled = torch.compile(reference_block, backend="aot_eager", fullgraph=True)
    images, points, content = (
        torch.randn(2, 3, 32, 32),
        torch.rand(2, 4, 2) * 2 - 1,
        torch.zeros(vit.embed_dim),
    )
    with torch.no_grad():
        eager = forward_with_references(vit, images, points, content)
        traced = forward_with_references(vit, images, points, content, block_fn=compiled)
    torch.testing.assert_close(traced.refs, eager.refs, atol=1e-5, rtol=1e-5)
