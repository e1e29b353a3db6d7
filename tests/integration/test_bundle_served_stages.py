"""An agent compares the files of the stages it serves with the bundle's manifest, and only
those: hashing a large model's other stages at every start (every device holds the whole
bundle) would cost it seconds to minutes of start-up for files it never reads. Real agent
processes over ZeroMQ on the tiny two-stage bundle."""

from __future__ import annotations

import os

import pytest

from agent.errors import EXIT_CONFIG
from engines.bundle import BundleError, load_bundle
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


def _change_stage(bundle: str, h: int) -> None:
    """One byte of stage ``h``'s file changed after the build (a copy gone wrong)."""
    path = os.path.join(bundle, "stage%d.onnx" % h)
    with open(path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        byte = f.read(1)
        f.seek(-8, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("changed", [1, 2])
def test_only_the_worker_of_a_changed_stage_refuses_to_start(tmp_path, changed):
    """With stage ``changed``'s file no longer matching the manifest, the worker of that stage
    exits 78 naming the file and both hashes, while the source and the other stage's worker
    start and run (neither reads that file)."""
    bundle = build_two_stage_bundle(str(tmp_path / "b"))
    _change_stage(bundle, changed)
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed")
    bad, good = ("w1", "w2") if changed == 1 else ("w2", "w1")
    try:
        c.start(bad)
        refused = c.procs.pop(bad)  # (wait_for fails on any agent that exited)
        assert refused.proc.wait(timeout=120) == EXIT_CONFIG, refused.last_error()
        c.start(good)
        c.start("s1")
        c.wait_for(lambda: c.stats(good) is not None and c.stats("s1") is not None, 120,
                   "%s and s1 to run" % good)
        assert c.procs[good].poll() is None and c.procs["s1"].poll() is None
    finally:
        c.stop_all()
    line = refused.last_error()
    assert "stages[%d].file stage%d.onnx has sha256" % (changed - 1, changed) in line, line
    assert "manifest says" in line, line


def test_load_bundle_given_stage_numbers_compares_only_their_files(tmp_path):
    """``load_bundle(path, verify_files=stages)`` compares the files of those stages with the
    manifest and no other; True compares all, False none."""
    bundle = build_two_stage_bundle(str(tmp_path / "b"))
    _change_stage(bundle, 2)
    assert [s.index for s in load_bundle(bundle, verify_files=[1]).stages] == [1, 2]
    assert load_bundle(bundle, verify_files=()).name == load_bundle(bundle, verify_files=False).name
    for verify in ([2], range(1, 3), True):
        with pytest.raises(BundleError, match=r"stages\[1\]\.file stage2\.onnx has sha256"):
            load_bundle(bundle, verify_files=verify)
