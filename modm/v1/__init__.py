"""Generated gRPC stubs for the modm.v1 API (scripts/gen_protos.py)."""
