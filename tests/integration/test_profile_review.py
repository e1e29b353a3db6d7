"""edge-agent profile used wrongly, on the shipped demo bundle: an --out naming the --data file is
refused (the profile replaced the labelled set), SIGHUP and SIGTERM mid-profile end as Ctrl-C
does (one line, their exit status, nothing written), and a data set that does not fit the bundle
is refused in one line naming the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from agent.cli import main as cli
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def small_set(tmp_path):
    """The first 40 replay samples, as a file of their own."""
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"][:40], z["y"][:40]
    path = tmp_path / "val.npz"
    np.savez(path, x=x, y=y)
    return path


def _one_error_line(capsys, argv):
    rc = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_out_naming_the_data_file_is_refused_and_the_data_set_kept(tmp_path, capsys, small_set):
    """Rule: --out naming the --data file, with or without the .npz that profile adds, is
    refused before the bundle is read, and the data set stays byte for byte."""
    before = small_set.read_bytes()
    for out in (str(small_set), str(tmp_path / "val")):
        err = _one_error_line(capsys, ["profile", "--bundle", DEMO_BUNDLE_DIR, "--data",
                                       str(small_set), "--out", out])
        assert "is the --data file" in err, err
    assert small_set.read_bytes() == before
    assert sorted(os.listdir(str(tmp_path))) == ["val.npz"]


def test_a_set_that_does_not_fit_the_bundle_is_named_in_one_line(tmp_path, capsys):
    """Rule: samples of another shape, labels past the heads' classes and an empty x are each
    one line naming the data file; no profile is written."""
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"][:20], z["y"][:20]
    cases = {"shape.npz": (x[:, :, :20, :20], y, "x has sample shape (1, 20, 20), stage 1 "
                           "expects (1, 28, 28)"),
             "labels.npz": (x, y + 10, "y holds labels"),
             "empty.npz": (x[:0], y[:0], "x holds no samples")}
    for name, (xs, ys, why) in cases.items():
        np.savez(tmp_path / name, x=xs, y=ys)
        err = _one_error_line(capsys, ["profile", "--bundle", DEMO_BUNDLE_DIR, "--data",
                                       str(tmp_path / name), "--out", str(tmp_path / "p.npz")])
        assert str(tmp_path / name) in err and why in err, err
    assert not os.path.exists(str(tmp_path / "p.npz"))


# The process signals itself while the 5th sample is profiled: a fixed point mid-run, whatever
# the machine's speed; the signal is then handled as one from a terminal or systemd would be.
DRIVER = """
import os, signal, sys
import engines.profile as profile
real, calls = profile.softmax_confidence, []
def softmax_confidence(logits):
    calls.append(1)
    if len(calls) == 5 * 4:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(logits)
profile.softmax_confidence = softmax_confidence
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_mid_profile_ends_in_one_line_with_its_exit_status(tmp_path, small_set, sig):
    """Rule: SIGTERM or SIGHUP (a closed ssh session) while samples are profiled ends the
    command as Ctrl-C does: exit 128 + the signal, the one line `edge-agent profile:
    interrupted (SIG...)`, no traceback, no --out and no temporary file (the default action
    killed it silently)."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(driver), sig, "--log-level", "ERROR", "profile",
                        "--bundle", DEMO_BUNDLE_DIR, "--data", str(small_set),
                        "--out", str(out_dir / "p.npz")],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=300)
    assert p.returncode == 128 + getattr(signal, sig), p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == ["edge-agent profile: interrupted (%s)" % sig], p.stderr
    assert os.listdir(str(out_dir)) == []
