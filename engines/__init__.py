"""Model side: bundle format (``engines.bundle``), ONNX partitioning (``engines.build``), exit
profiles (``engines.exit_profile``), the engine interface (``engines.engine``) and its backends,
chosen by ``engines.loader.load_engine``.

Importing the package imports nothing else: the pure parts (the exit profile that policies read)
must not pull in the bundle writer, onnxruntime or TensorRT.
"""
