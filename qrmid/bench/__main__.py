"""``python -m qrmid.bench``: the daemon against a bare gRPC echo server."""

from qrmid.bench.daemon import main

main()
