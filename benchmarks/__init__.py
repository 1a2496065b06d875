"""A development benchmark the product's defaults were never tuned on (not shipped in the wheel).

Two pools of real surfaces (split A for choosing, split B frozen and only reported), a defect generator
of its own (`benchmarks.defects_physical`), and one command that runs every labels regime through the
exported bundle and the service's inference code. See docs/BENCHMARKS.md.

Beside it, the research tools: the label-efficiency study (`study`,
`study_report`, `study_summary`), the frozen-feature probes (`probe`), the U-Net baseline
(`baselines`), and the benches (`speed`, `accuracy`), each runnable with `python -m`.
"""
