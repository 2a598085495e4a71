"""pgdyno's benchmarks: `python -m bench` (or `make bench`) prints the figures, writes JSON.

Kept import-free on purpose: worker processes import task modules under `bench.systems`, and
whatever this package imports would show up in their memory (idle RSS is a measured figure).
"""
