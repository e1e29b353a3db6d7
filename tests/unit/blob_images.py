"""A labelled set a pooled exit head can learn, for the tests of ``heads``."""

from __future__ import annotations

import numpy as np


def blob_images(n: int = 240, seed: int = 0):
    """(x, y): n float32 images (1, 8, 8) whose class (0..2) is where a bright blob sits, so a
    pooled map can tell them apart."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, size=(n, 1, 8, 8)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, 2 * k:2 * k + 3, 2 * k:2 * k + 3] += 2.0
    return x, y.astype(np.int64)
