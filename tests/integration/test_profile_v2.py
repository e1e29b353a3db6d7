"""``edge-agent profile`` writes exit profile format 2: every head's logits, the labels, the
input embedding chosen by ``--embedding`` and the SHA-256 of the profiled inputs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from agent.cli import main as cli
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from engines.exit_profile import load_exit_profile, softmax_confidence


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """The first 60 replay images as a data file of their own."""
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"][:60], z["y"][:60]
    path = str(tmp_path_factory.mktemp("data") / "small.npz")
    np.savez(path, x=x, y=y)
    return path, x, y


@pytest.mark.parametrize("choice,kind,dim", [("auto", "patchnorm4", 49), ("raw", "raw", 784),
                                             ("none", "", None)])
def test_profile_records_logits_labels_and_the_chosen_embedding(tmp_path, capsys, small_data,
                                                                choice, kind, dim):
    """Each --embedding choice: logits (N, 4, 10) whose max softmax is the confidence, labels
    equal to y, the embedding of that kind (none: no embedding) and the inputs' SHA-256; the
    printed summary names what was stored."""
    path, x, y = small_data
    out = str(tmp_path / "p.npz")
    assert cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", path, "--out", out,
                "--embedding", choice]) == 0
    assert "embedding %s" % (kind or "none") in capsys.readouterr().out
    prof = load_exit_profile(out)
    assert prof.logits.shape == (60, 4, 10) and np.array_equal(prof.label, y)
    conf, _ = softmax_confidence(prof.logits[:, 2])
    assert np.array_equal(conf, prof.confidence[:, 2])
    assert prof.embedding_kind == kind
    assert (prof.embedding is None) if dim is None else prof.embedding.shape == (60, dim)
    assert prof.data_sha256 == hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def test_bad_embedding_choice_is_a_usage_error(tmp_path, capsys, small_data):
    """An unknown --embedding value exits 2 with one line naming the option."""
    with pytest.raises(SystemExit) as exc:
        cli(["profile", "--bundle", DEMO_BUNDLE_DIR, "--data", small_data[0], "--out",
             str(tmp_path / "p.npz"), "--embedding", "pca"])
    assert exc.value.code == 2 and "--embedding" in capsys.readouterr().err
