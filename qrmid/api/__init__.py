"""The gRPC surface: servicers, proto <-> domain mapping, errors -> status codes. The only layer that sees protobuf."""
