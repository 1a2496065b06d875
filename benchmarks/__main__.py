"""`python -m benchmarks …`: build a split's data, run every regime on it, render its tables."""

from benchmarks.cli import app

app()
