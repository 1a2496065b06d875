"""Accuracy benches: what a trained hybrid run's map, branches, bank and thresholds do on a test folder.

Each module runs as `python -m benchmarks.accuracy.<name> --help`, reports numbers and asserts nothing;
`--json PATH` writes the rows it prints and the settings it ran with (`benchmarks.results_json`).
"""
