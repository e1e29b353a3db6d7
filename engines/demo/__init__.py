"""The shipped demo model: a 4-stage multi-exit CNN for Fashion-MNIST (see train_demo.py).

``DEMO_BUNDLE_DIR`` is the bundle (stage ONNX files, bundle.json, exit_profile.npz);
``REPLAY_PATH`` is the replay set: ``x`` float32 (N, 1, 28, 28) in [0, 1], ``y`` int64 (N,),
the first images of the official Fashion-MNIST test split (never used in training);
``MULTI_EXIT_ONNX`` is the unsplit multi-exit graph the bundle was cut from.
"""

from __future__ import annotations

import os

DEMO_DIR = os.path.dirname(os.path.abspath(__file__))
DEMO_BUNDLE_DIR = os.path.join(DEMO_DIR, "bundle")
REPLAY_PATH = os.path.join(DEMO_DIR, "replay.npz")
MULTI_EXIT_ONNX = os.path.join(DEMO_DIR, "multi_exit.onnx")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")
