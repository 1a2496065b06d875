"""Accuracy benches: what a trained hybrid run's map, branches, bank and thresholds do on a test folder.

Each module runs as `python -m benchmarks.accuracy.<name> --help`, reports numbers and asserts nothing.
"""
