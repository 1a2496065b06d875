"""`python -m training.cli …`: the same CLI, for launchers that take a module (`torchrun -m training.cli`)."""

from training.cli import app

app()
