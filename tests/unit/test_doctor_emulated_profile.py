"""`doctor --config` on a worker with emulated capacity says what ``run`` does with its
``capacity_profile``: run reads and checks the file even though no entry is used (a rehearsal
with ``--emulate`` refuses the file a real run would), so a corrupt profile is a FAIL naming
exit 78 and the fix, and a valid one is OK. Real node configs and files in tmp_path; the
valid profile is made by a real ``calibrate``."""

from __future__ import annotations

import shlex

from agent.cli import main
from agent.ops.doctor import FAIL, OK
from agent.ops.doctor_node import check_node
from engines.demo import DEMO_BUNDLE_DIR as DEMO
from tests.unit.test_doctor_node import QUICK, _by_name, _node


def test_a_corrupt_profile_of_an_emulated_worker_fails_doctor_as_it_fails_run(tmp_path):
    """Rule: emulate_capacity_flops > 0 and a capacity_profile of bad JSON: the "node
    calibration" line is a FAIL saying run exits 78, with the move-away-then-calibrate fix."""
    bad = tmp_path / "profile.json"
    bad.write_text("{not json")
    checks, _ = check_node(_node(tmp_path, "w4", capacity_profile=str(bad),
                                 emulate_capacity_flops=10 ** 9))
    line = _by_name(checks)["node calibration"]
    assert line.status == FAIL, line
    assert str(bad) in line.detail and "run exits 78" in line.detail, line
    assert line.fix.startswith("move it away, then run `"), line
    assert "calibrate" in line.fix, line


def test_a_valid_profile_of_an_emulated_worker_is_ok_and_not_used(tmp_path):
    """Rule: with emulated capacity a valid profile is OK, saying no entry is used and naming
    the emulated capacity."""
    prof = tmp_path / "profile.json"
    argv = ["calibrate", "--bundle", DEMO, "--profile", str(prof), "--state-dir", str(tmp_path / "cal"), "--stages", "4"] + QUICK
    assert main(argv) == 0, shlex.join(argv)
    checks, _ = check_node(_node(tmp_path, "w4", capacity_profile=str(prof),
                                 emulate_capacity_flops=10 ** 9))
    line = _by_name(checks)["node calibration"]
    assert line.status == OK, line
    assert "a valid profile, no entry used" in line.detail and "1e+09" in line.detail, line

