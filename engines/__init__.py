"""Model side: bundle format, ONNX partitioning, exit profiles and inference backends.

``load_bundle`` and ``load_engine`` are the entry points; backends import their libraries only
when an engine is loaded.
"""

from __future__ import annotations

from engines.bundle import Bundle, BundleError, StageSpec, load_bundle
from engines.engine import EngineInputError, EngineUnavailable, StageOutput
from engines.loader import load_engine

__all__ = ["Bundle", "BundleError", "StageSpec", "load_bundle", "EngineInputError",
           "EngineUnavailable", "StageOutput", "load_engine"]
