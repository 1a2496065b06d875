"""`python -m benchmarks …`: a split's data, every regime on it, tables from results, label-study, probe."""

from benchmarks.cli import app

app()
