"""A development benchmark the product's defaults were never tuned on (not shipped in the wheel).

Two pools of real surfaces (split A for choosing, split B frozen and only reported), a defect generator
of its own (`benchmarks.defects_physical`), and one command that runs every labels regime through the
exported bundle and the service's inference code. See docs/BENCHMARKS.md.
"""
