"""Generated gRPC stubs of the qrmid.v1 API (from protos/qrmid/v1; do not edit, regenerate)."""
