"""Speed benches: throughput and latency of the engine, the service, its storage and pretraining.

Each module runs as `python -m benchmarks.speed.<name> --help`, reports numbers and asserts nothing.
"""
