"""Models: ViT backbone with reference tokens, projection heads, segmentation head."""
