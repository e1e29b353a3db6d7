"""edge-agent heads used wrongly: an --out naming the --data file is refused (it replaced the data
set with the graph), SIGTERM mid-training ends as Ctrl-C does (one line, exit 143, no --out and
no temporary file left), the refusals of the data set name the --data option, and an --at
naming the input or a weight says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import onnx

from agent.cli import main as cli
from engines.tiny_model import FINAL, INPUT, make_tiny_multi_exit
from tests.unit.blob_images import blob_images  # the blob images every heads test learns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _backbone(tmp_path):
    """The tiny graph without its exit heads, saved; its path."""
    full, path = str(tmp_path / "full.onnx"), str(tmp_path / "backbone.onnx")
    onnx.save(make_tiny_multi_exit(seed=3), full)
    onnx.utils.extract_model(full, path, [INPUT], [FINAL])
    return path


def _one_error_line(capsys, argv):
    rc = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_out_naming_the_data_file_is_refused_and_the_data_set_kept(tmp_path, capsys):
    """Rule: --out naming the --data file (here by another spelling) is refused before anything
    runs, in one line naming both options, and the data set is left byte for byte."""
    path = _backbone(tmp_path)
    x, y = blob_images(60)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    before = data.read_bytes()
    err = _one_error_line(capsys, ["heads", "--onnx", path, "--at", "c1", "--data", str(data),
                                   "--out", os.path.join(str(tmp_path), ".", "d.npz")])
    assert "--out" in err and "is the --data file" in err, err
    assert data.read_bytes() == before


def test_refusals_of_the_data_set_name_the_data_option(tmp_path, capsys):
    """Rule: labels out of range, too few samples of a class and samples of another shape
    than the backbone's input are each one line said of --data; nothing is written."""
    path = _backbone(tmp_path)
    x, y = blob_images(60)
    wrong = y.copy()
    wrong[7] = 3
    keep = np.flatnonzero(y != 1).tolist() + np.flatnonzero(y == 1)[:2].tolist()
    cases = {"label.npz": (x, wrong, "label 3 is out of range"),
             "few.npz": (x[keep], y[keep], "too few samples of class 1"),
             "shape.npz": (x[:, :, :6, :6], y, "x has samples of shape (1, 6, 6)")}
    for name, (xs, ys, why) in cases.items():
        np.savez(tmp_path / name, x=xs, y=ys)
        err = _one_error_line(capsys, ["heads", "--onnx", path, "--at", "c1", "--data",
                                       str(tmp_path / name), "--out", str(tmp_path / "h.onnx")])
        assert "error: --data: " + why in err, err
    assert not os.path.exists(str(tmp_path / "h.onnx"))


# The process signals itself as the first head starts training: a fixed point mid-run, whatever
# the machine's speed; the signal is then handled as one from a terminal or systemd would be.
DRIVER = """
import os, signal, sys
import engines.heads as heads
real = heads.fit_head
def fit_head(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(*args, **kwargs)
heads.fit_head = fit_head
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_mid_training_ends_in_one_line_with_exit_143_and_writes_nothing(tmp_path):
    """Rule: SIGTERM while a head trains ends the command as Ctrl-C does: exit 143, the one
    line `edge-agent heads: interrupted (SIGTERM)`, no traceback, and neither --out nor a
    temporary file beside it (the default action killed it silently with -15)."""
    path = _backbone(tmp_path)
    x, y = blob_images(120)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(driver), "SIGTERM", "--log-level", "WARNING", "heads",
                        "--onnx", path, "--at", "c1,c2", "--data", str(tmp_path / "d.npz"),
                        "--out", str(out_dir / "h.onnx")],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == ["edge-agent heads: interrupted (SIGTERM)"], p.stderr
    assert os.listdir(str(out_dir)) == []


def test_at_naming_the_input_or_a_weight_says_so(tmp_path, capsys):
    """Rule: --at naming the backbone's input or one of its weights is refused as such (it was
    called an unknown tensor that no node produces); nothing is written."""
    path = _backbone(tmp_path)
    x, y = blob_images(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for at, what in ((INPUT, "input"), ("w1", "weight")):
        err = _one_error_line(capsys, ["heads", "--onnx", path, "--at", at, "--data",
                                       str(tmp_path / "d.npz"), "--out", str(tmp_path / "h.onnx")])
        assert err.endswith("--at: %r is the backbone's %s, not an intermediate tensor"
                            % (at, what)), err
    assert not os.path.exists(str(tmp_path / "h.onnx"))
