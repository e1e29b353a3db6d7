"""Model side: bundle format, ONNX partitioning, exit profiles and inference backends."""
