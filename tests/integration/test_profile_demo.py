"""edge-agent profile and the reuse-based accuracy table on the shipped demo model.

The table computed from the profile alone must equal running the stage chain sample by sample
with early exit (the one exit rule, ``should_exit``) at the same thresholds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from agent.cli import main as cli
from engines.bundle import load_bundle
from engines.loader import load_engine
from engines.demo import DEMO_BUNDLE_DIR, DEMO_DIR, REPLAY_PATH
from engines.exit_profile import (
    exit_stats,
    load_exit_profile,
    should_exit,
    softmax_confidence,
)
from engines.profile import load_dataset

THRESHOLD_VECTORS = ([0.5, 0.5, 0.5], [0.9, 0.8, 0.7], [0.99, 0.95, 0.9], [0.6, 1.0, 0.85], [1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Profile of the demo bundle on the replay set, written by the real CLI command."""
    out = str(tmp_path_factory.mktemp("profile") / "exit_profile.npz")
    assert cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", REPLAY_PATH, "--out", out]) == 0
    return load_exit_profile(out)


def _early_exit_run(bundle, x, y, thresholds):
    """Serve every sample through the chain with early exit: returns (accuracy, exits per head)."""
    engines = [load_engine(s, backend="onnxruntime", threads=1) for s in bundle.stages]
    c = dict(zip(bundle.early_exit_stages, thresholds))
    correct, exits = 0, np.zeros(len(bundle.exit_stages), dtype=np.int64)
    for i in range(len(x)):
        t, col = x[i:i + 1], 0
        for stage, engine in zip(bundle.stages, engines):
            out = engine.run(t)
            if out.logits is not None:
                conf, cls = softmax_confidence(out.logits)
                if stage.index == bundle.num_stages or should_exit(conf[0], c[stage.index]):
                    correct += int(cls[0] == y[i])
                    exits[col] += 1
                    break
                col += 1
            t = out.features
    return correct / float(len(x)), exits


def test_accuracy_table_equals_sample_by_sample_early_exit(measured):
    """For several threshold vectors, exit_stats(profile) gives exactly the accuracy and per-head
    exit fractions of actually running the chain with early exit."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    x, y = load_dataset(REPLAY_PATH)
    for thresholds in THRESHOLD_VECTORS:
        stats = exit_stats(measured, thresholds)
        accuracy, exits = _early_exit_run(bundle, x, y, thresholds)
        assert stats.accuracy == accuracy, thresholds
        assert np.array_equal(np.rint(stats.exit_fraction * len(x)).astype(np.int64), exits), thresholds


def test_shipped_exit_profile_matches_the_shipped_stages(measured):
    """The bundle's exit_profile.npz is what its stages produce on the replay set (float32
    confidences agree to 1e-5: onnxruntime releases and SIMD paths differ in the last bits)."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    shipped = load_exit_profile(bundle.exit_profile_path)
    assert shipped.exit_stages == measured.exit_stages == bundle.exit_stages
    assert np.array_equal(shipped.correct, measured.correct)
    assert np.allclose(shipped.confidence, measured.confidence, rtol=0, atol=1e-5)


def test_demo_model_shape_and_accuracy_trade_off(measured):
    """Demo: >= 4 stages, >= 2 early exits, >= 2000 replay samples, first exit >= 5 points below the
    final head, shipped artifacts < 5 MB."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    assert bundle.num_stages >= 4 and len(bundle.early_exit_stages) >= 2 and bundle.num_classes == 10
    acc = measured.correct.mean(axis=0)
    assert measured.num_samples >= 2000
    assert acc[-1] - acc[0] >= 0.05
    total = 0
    for root, _, files in os.walk(DEMO_DIR):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                     if f.endswith((".onnx", ".npz", ".json")))
    assert total < 5 * 1024 * 1024


def test_replay_set_has_interface_dtypes():
    """REPLAY_PATH holds x float32 (N,1,28,28) in [0,1] and y int64 (N,)."""
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"], z["y"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == np.int64
    assert len(x) == len(y) >= 2000 and 0.0 <= x.min() and x.max() <= 1.0


def test_profile_rejects_mismatched_data(tmp_path, capsys):
    """Data whose samples do not fit stage 1 fails with one line naming both shapes."""
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, x=np.zeros((3, 1, 8, 8), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    assert cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", bad, "--out", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(1, 8, 8)" in err[0] and "(1, 28, 28)" in err[0]


def test_profile_rejects_labels_the_heads_cannot_have(tmp_path, capsys):
    """Labels outside the heads' classes fail with one line naming both ranges (the profile
    was written, every head at 0% correct)."""
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, x=np.zeros((3, 1, 28, 28), dtype=np.float32), y=np.array([0, 99, 3]))
    out = tmp_path / "p.npz"
    assert cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels 0..99" in err[0] and "10 classes" in err[0]
    assert not out.exists()


def test_profile_data_that_is_a_folder_is_said_to_be_one(tmp_path, capsys):
    """--data naming a folder is one line saying so (it read "does not exist")."""
    assert cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", str(tmp_path),
                "--out", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data: %s is a directory" % tmp_path in err[0]
