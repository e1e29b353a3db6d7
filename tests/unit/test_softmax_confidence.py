"""``softmax_confidence``: the exit rule's confidence is the top softmax probability and its
class, computed as 1 / sum(exp(z - max)) (the top term is exp(0) = 1 exactly)."""

from __future__ import annotations

import numpy as np

from engines.exit_profile import softmax_confidence


def _full_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z.reshape(z.shape[0], -1) - z.reshape(z.shape[0], -1).max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.max(axis=1), p.argmax(axis=1)


def test_confidence_and_class_equal_the_full_softmax_bit_for_bit():
    """Rule: the shortcut gives the same figures as dividing the whole row, at every scale
    (the simulator's recorded figures depend on them)."""
    rng = np.random.default_rng(3)
    for scale in (0.01, 1.0, 30.0, 1e4):
        for classes in (2, 10, 257):
            logits = (rng.standard_normal((500, classes)) * scale).astype(np.float32)
            conf, cls = softmax_confidence(logits)
            want_conf, want_cls = _full_softmax(logits)
            assert np.array_equal(conf, want_conf) and np.array_equal(cls, want_cls)


def test_one_row_and_stacked_shapes_read_as_rows():
    """Rule: a 1-D row is one sample; (N, 1, C) is N samples of C classes."""
    row = np.array([0.0, 2.0, 1.0], dtype=np.float32)
    conf, cls = softmax_confidence(row)
    assert conf.shape == (1,) and cls.tolist() == [1]
    assert abs(conf[0] - np.exp(2.0) / np.exp([0.0, 2.0, 1.0]).sum()) < 1e-12
    conf3, cls3 = softmax_confidence(np.stack([row, row])[:, None, :])
    assert conf3.tolist() == [conf[0], conf[0]] and cls3.tolist() == [1, 1]


def test_huge_logits_neither_overflow_nor_saturate_early():
    """Rule: the max is subtracted first, so 1e4-sized logits still give a finite confidence
    below 1 where two classes tie."""
    conf, cls = softmax_confidence(np.array([[1e4, 1e4, -1e4]], dtype=np.float32))
    assert conf[0] == 0.5 and cls[0] == 0


def test_a_nan_logit_gives_a_nan_confidence_the_worker_drops():
    """Rule: a broken head output is not a confident exit (the worker drops a non-finite
    confidence as ``bad_output``)."""
    with np.errstate(invalid="ignore"):
        conf, _ = softmax_confidence(np.array([[np.nan, 1.0, 2.0]], dtype=np.float32))
    assert np.isnan(conf[0])
