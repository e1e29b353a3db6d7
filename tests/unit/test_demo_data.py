"""The demo replay set is held-out Fashion-MNIST test data read from Debian's package."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engines.demo import REPLAY_PATH
from engines.demo.train_demo import DATA_DIR, NUM_REPLAY, load_split


def test_replay_set_is_the_first_test_images_of_debian_fashion_mnist():
    """REPLAY_PATH holds exactly the first NUM_REPLAY images (scaled to [0, 1]) and labels of the
    official t10k split, read with the training script's own IDX reader."""
    if not os.path.isdir(DATA_DIR):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    images, labels = load_split("t10k")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"], z["y"]
    assert len(x) == NUM_REPLAY >= 2000
    assert np.array_equal(y, labels[:NUM_REPLAY])
    assert np.array_equal(np.rint(x[:, 0] * 255.0).astype(np.uint8), images[:NUM_REPLAY])
