"""Benchmarks run by hand; each prints its figures with ratios to a baseline measured in the same run.

- ``python -m qrmid.bench``: the daemon against a bare gRPC echo server.
"""
