"""Benchmarks run by hand; each prints its figures with ratios to a baseline measured in the same run.

- ``python -m qrmid.bench``: the daemon against a bare gRPC echo server;
- ``python -m qrmid.bench.ibm``: IBM lane scheduling against QRMI-style clients retrying 429;
- ``python -m qrmid.bench.pasqal``: Pasqal batch packing against one batch per task.
"""
