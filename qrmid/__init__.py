"""qrmid: a node-local daemon serving QRMI quantum resources over gRPC."""

__version__ = "0.1.0"
