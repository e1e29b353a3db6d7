"""MLCI (seed paper 001): multi-level cloud-edge-end collaborative inference."""
