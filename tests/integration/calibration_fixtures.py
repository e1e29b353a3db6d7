"""Shared by the calibration integration tests: the bundle they calibrate, and a stage
engine wrapper that injects a slow-down."""

from __future__ import annotations

import json
import os
import shutil
import time

import onnx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def calibration_bundle(tmp_dir: str) -> str:
    """A private copy of the shipped demo bundle (tests may edit it)."""
    from engines.demo import DEMO_BUNDLE_DIR

    out = os.path.join(tmp_dir, "bundle")
    shutil.copytree(DEMO_BUNDLE_DIR, out)
    return out


def change_stage_file(bundle_dir: str, index: int) -> None:
    """Give stage ``index`` a new ONNX file (same graph, new doc string) and update the
    manifest's hash, as rebuilding the stage would."""
    from engines.bundle import sha256_file

    manifest_path = os.path.join(bundle_dir, "bundle.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    entry = [s for s in manifest["stages"] if s["index"] == index][0]
    path = os.path.join(bundle_dir, entry["file"])
    model = onnx.load(path)
    model.doc_string = "rebuilt %f" % time.time()
    onnx.save(model, path)
    entry["sha256"] = sha256_file(path)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)


class SlowedEngine:
    """Wraps a real engine; after ``slow_down(extra_s)`` every run takes ``extra_s`` longer
    (as a throttled or down-clocked device would)."""

    def __init__(self, engine):
        self.engine = engine
        self.info = engine.info
        self.extra_s = 0.0

    def slow_down(self, extra_s: float) -> None:
        self.extra_s = extra_s

    def run(self, x):
        out = self.engine.run(x)
        if self.extra_s > 0:
            time.sleep(self.extra_s)
        return out
