"""Exit profile format 2: optional logits, labels and input embedding, the consistency rules,
v1 files still loading, the input embedding, the parity split and the synthetic v2 fields."""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import UsageError
from agent.policies.splits import rows_named, test_rows, validation_rows
from agent.scenario.paper import synthetic_exit_profile
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from engines.embedding import (auto_kind, embed, embed_as_stored, input_embedding, kind_name,
                               parse_kind_name)
from engines.exit_profile import (ExitProfile, load_exit_profile, save_exit_profile,
                                  softmax_confidence)


def _v2(n=6, k=3, c=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, k, c)).astype(np.float32)
    label = rng.integers(0, c, size=n).astype(np.int64)
    conf = np.stack([softmax_confidence(logits[:, j])[0] for j in range(k)], axis=1)
    correct = np.stack([softmax_confidence(logits[:, j])[1] == label for j in range(k)], axis=1)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    return ExitProfile(k, tuple(range(1, k + 1)), conf, correct, logits=logits, label=label,
                       embedding=emb, embedding_kind="raw", data_sha256="ab" * 32)


def test_v1_file_still_loads_with_no_optional_fields(tmp_path):
    """A format-1 file (as written before format 2) loads; its optional fields are None/""."""
    p = str(tmp_path / "v1.npz")
    np.savez_compressed(p, format_version=np.int64(1), num_stages=np.int64(2),
                        exit_stages=np.array([1, 2]), confidence=np.array([[0.5, 0.9]]),
                        correct=np.array([[False, True]]), synthetic=np.bool_(False),
                        note=np.asarray("old"))
    prof = load_exit_profile(p)
    assert prof.exit_stages == (1, 2) and prof.note == "old"
    assert prof.logits is None and prof.label is None and prof.embedding is None
    assert prof.embedding_kind == "" and prof.num_classes is None


def test_v2_round_trip_keeps_every_field(tmp_path):
    """save then load returns the same arrays (logits/embedding float32, label int64) and
    strings; the file says format 2."""
    prof = _v2()
    p = str(tmp_path / "v2.npz")
    save_exit_profile(p, prof)
    back = load_exit_profile(p)
    with np.load(p) as z:
        assert int(z["format_version"]) == 2
    assert np.array_equal(back.logits, prof.logits) and back.logits.dtype == np.float32
    assert np.array_equal(back.label, prof.label) and back.label.dtype == np.int64
    assert np.array_equal(back.embedding, prof.embedding)
    assert back.embedding_kind == "raw" and back.data_sha256 == "ab" * 32
    assert back.num_classes == 4


@pytest.mark.parametrize("bad", [float("nan"), 2.0, -0.1])
def test_confidences_outside_0_1_are_refused(tmp_path, bad):
    """A confidence is a softmax maximum: a file with NaN, 2.0 or a negative one is refused
    (plan used to take it and show an accuracy of 1.0)."""
    p = str(tmp_path / "bad.npz")
    np.savez_compressed(p, format_version=np.int64(1), num_stages=np.int64(2),
                        exit_stages=np.array([1, 2]), confidence=np.array([[0.5, bad]]),
                        correct=np.array([[False, True]]), synthetic=np.bool_(False),
                        note=np.asarray("bad"))
    with pytest.raises(UsageError, match=r"confidences must be in \[0, 1\]"):
        load_exit_profile(p)


def test_unknown_format_version_is_refused(tmp_path):
    """A format-3 file is one clear error naming the versions this code reads."""
    p = str(tmp_path / "v3.npz")
    np.savez(p, format_version=np.int64(3))
    with pytest.raises(UsageError, match="format 3, this version reads 1, 2"):
        load_exit_profile(p)


def test_consistency_rules_reject_logits_that_disagree():
    """validate(): logits whose max softmax differs from confidence by > 1e-5, or whose argmax
    == label disagrees with correct, or optional fields of the wrong shape, are refused; a
    float32-rounding difference (1e-6) is accepted."""
    prof = _v2()
    prof.validate()
    import dataclasses
    ok = dataclasses.replace(prof, confidence=prof.confidence + 1e-6)
    ok.validate()
    with pytest.raises(UsageError, match="differs from confidence"):
        dataclasses.replace(prof, confidence=prof.confidence + 1e-3).validate()
    flipped = prof.correct.copy()
    flipped[0, 1] = not flipped[0, 1]
    with pytest.raises(UsageError, match="disagrees with correct on 1 row"):
        dataclasses.replace(prof, correct=flipped).validate()
    with pytest.raises(UsageError, match="label must have shape"):
        dataclasses.replace(prof, label=prof.label[:3]).validate()
    with pytest.raises(UsageError, match="logits must have shape"):
        dataclasses.replace(prof, logits=prof.logits[:, :2]).validate()
    with pytest.raises(UsageError, match="embedding_kind"):
        dataclasses.replace(prof, embedding_kind="").validate()


def test_patchnorm_on_a_hand_array():
    """patchnorm4 of a (1, 2, 8, 8) array: one L2 norm per 4x4 patch over both channels,
    row-major over the 2x2 patch grid; raw is the flattened input."""
    x = np.zeros((1, 2, 8, 8))
    x[0, 0, 0:4, 0:4] = 1.0          # patch (0,0): 16 ones -> 4
    x[0, 1, 0:4, 4:8] = 0.5          # patch (0,1): 16 * 0.25 -> 2
    x[0, 0, 4, 4] = 3.0              # patch (1,1): one 3 and one 4 -> 5
    x[0, 1, 7, 7] = 4.0
    e = input_embedding(x, "patchnorm", 4)
    assert e.shape == (1, 4) and np.allclose(e[0], [4.0, 2.0, 0.0, 5.0], rtol=0, atol=1e-12)
    assert np.array_equal(embed(x, "raw"), x.reshape(1, -1))
    assert np.array_equal(embed(x, "patchnorm4"), e)
    with pytest.raises(UsageError, match="divisible"):
        input_embedding(np.zeros((1, 1, 6, 6)), "patchnorm", 4)


def test_embedding_names_and_auto_choice():
    """Kind names round-trip; auto picks patchnorm for images divisible by 4, raw for small
    flat inputs, none for large flat inputs."""
    assert kind_name("patchnorm", 4) == "patchnorm4" and parse_kind_name("patchnorm4") == ("patchnorm", 4)
    assert parse_kind_name("raw") == ("raw", 0)
    with pytest.raises(UsageError):
        parse_kind_name("pca3")
    assert auto_kind((1, 28, 28)) == "patchnorm"
    assert auto_kind((1, 27, 27)) == "raw"
    assert auto_kind((3, 30, 30)) == "none" and auto_kind((100,)) == "raw"


def test_parity_split():
    """Validation rows are the even rows, test rows the odd ones; together they are every row
    once; rows_named picks by name and refuses unknown names."""
    assert list(validation_rows(5)) == [0, 2, 4] and list(test_rows(5)) == [1, 3]
    both = np.sort(np.concatenate([validation_rows(2000), test_rows(2000)]))
    assert np.array_equal(both, np.arange(2000))
    assert list(rows_named("all", 3)) == [0, 1, 2]
    assert list(rows_named("test", 4)) == [1, 3]
    with pytest.raises(UsageError, match="rows"):
        rows_named("train", 4)


def test_synthetic_v2_fields_are_consistent_and_leave_v1_fields_unchanged():
    """The synthetic profile with v2 fields has logits/labels that pass the consistency rules,
    the same confidence/correct as without them, a 16-value embedding whose column 0 tracks
    difficulty (correlated with being wrong at the first head), and says synthetic in note."""
    a = synthetic_exit_profile([0.6, 0.8], [1, 2], 2, 10, 3000, seed=4)
    b = synthetic_exit_profile([0.6, 0.8], [1, 2], 2, 10, 3000, seed=4, v2_fields=True)
    assert np.array_equal(a.confidence, b.confidence) and np.array_equal(a.correct, b.correct)
    b.validate()
    assert b.logits.shape == (3000, 2, 10) and b.embedding.shape == (3000, 16)
    assert "synthetic logits" in b.note and b.synthetic
    r = np.corrcoef(b.embedding[:, 0], ~b.correct[:, 0])[0, 1]
    assert r > 0.4


def test_shipped_demo_profile_is_v2_tied_to_the_replay_set():
    """The shipped demo profile has logits (10 classes), labels equal to the replay set's y,
    a patchnorm4 embedding equal to embedding the replay images, and the replay x's SHA-256."""
    import hashlib
    prof = load_exit_profile(DEMO_BUNDLE_DIR + "/exit_profile.npz")
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"], z["y"]
    assert prof.num_classes == 10 and np.array_equal(prof.label, y)
    assert prof.embedding_kind == "patchnorm4" and prof.embedding.shape == (len(x), 49)
    assert np.allclose(prof.embedding, embed(x, "patchnorm4"), rtol=1e-6, atol=1e-6)
    assert np.array_equal(prof.embedding[7], embed_as_stored(x[7:8], "patchnorm4")[0])
    assert prof.data_sha256 == hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def test_probabilities_are_told_from_logits():
    """Rule: rows all >= 0 summing to 1 (a softmax's output) are named as probabilities, with
    the fix; logits (any sign, any sum), one class, or no rows are not."""
    from engines.exit_profile import probabilities_problem
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], np.float32)
    assert "looks like softmax probabilities" in probabilities_problem(p, "stage 4's head 'x'")
    assert probabilities_problem(np.log(p), "h") == ""
    assert probabilities_problem(p * 2, "h") == ""
    assert probabilities_problem(np.ones((3, 1), np.float32), "h") == ""
    assert probabilities_problem(np.zeros((0, 3), np.float32), "h") == ""
