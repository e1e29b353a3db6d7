"""``edge-agent build`` given one head tensor for two roles (``--final`` naming an exit head or
a cut, one ``--exits`` tensor for two stages): one line naming the option at fault, exit 2,
nothing written, rather than a complaint about the cut."""

from __future__ import annotations

import os

import onnx
import pytest

from agent import cli
from engines.tiny_model import FINAL, make_tiny_multi_exit


@pytest.fixture
def model(tmp_path):
    path = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=1), path)
    return path


@pytest.mark.parametrize("argv,line", [
    (["--cuts", "c2", "--exits", "1:e1", "--final", "e1"],
     "--final: 'e1' is also an exit head (--exits): name the final head's logits, the last "
     "stage's own output"),
    (["--cuts", "c2", "--exits", "1:e1", "--final", "c2"],
     "--final: 'c2' is also a cut (--cuts): name the final head's logits, the last stage's "
     "own output"),
    (["--cuts", "c1,c2", "--exits", "1:e1,2:e1", "--final", FINAL],
     "--exits: 'e1' is named for two stages; each stage's exit head is its own graph output"),
], ids=["final-is-an-exit", "final-is-a-cut", "one-exit-for-two-stages"])
def test_a_head_named_for_two_roles_is_one_line_naming_the_option(model, tmp_path, capsys,
                                                                   argv, line):
    """Rule: a --final that is also an exit head or a cut, or an exit tensor given to two
    stages, is refused in one line naming that option (exit 2, no bundle folder), not blamed on
    a cut that does not separate the graph or on two stages computing one node."""
    out = str(tmp_path / "bundle")
    assert cli.main(["build", "--onnx", model, "--out", out] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-agent build: error: " + line], err
    assert not os.path.exists(out)


def test_the_final_head_named_apart_from_the_exits_still_builds(model, tmp_path, capsys):
    """Rule: the checks above leave a correct specification alone: --final naming the graph
    output that is no exit builds a bundle that loads."""
    from engines.bundle import load_bundle

    out = str(tmp_path / "bundle")
    assert cli.main(["build", "--onnx", model, "--cuts", "c2", "--exits", "1:e1", "--final",
                     FINAL, "--out", out]) == 0
    b = load_bundle(out)
    assert b.num_stages == 2 and list(b.early_exit_stages) == [1]
