"""``doctor`` and ``run`` name a missing calibration entry in the same words
(``agent.node.profilekey.missing_part``): a stage never calibrated is "stage 2 is not
calibrated in mode M" in both (doctor said its entries were of another bundle). A
``power_mode`` pinning a CPU-path mode this machine is not in, which no calibrate here can
write, gets the fix of changing ``power_mode`` (or calibrating in that mode), not a calibrate
command alone. Real profiles, configs, and a real worker built from its config."""

from __future__ import annotations

import logging
import re

import pytest

from agent.ops.doctor import WARN
from agent.ops.doctor_node import check_node
from calibration import host
from calibration.profile import current_power_mode, update_profile
from engines.accelerator import is_jetson
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.built_worker import built_worker
from tests.unit.test_calibrate_threads_key import CPU, _entry
from tests.unit.test_doctor_node import _by_name, _node

PINNED = "cpu-unreachable-1MHz"  # a CPU-path name no machine here is in


def _run_warning(tmp_path, caplog, node, **over):
    """The start-up warning of a real worker ``node`` of the demo chain."""
    caplog.clear()
    caplog.set_level(logging.INFO)
    built = built_worker(str(tmp_path / ("run-" + node)), node=node, warmup_runs=0,
                         timing_runs=2, **over)
    built.close()
    warn = [r.getMessage() for r in caplog.records if "no calibration entry" in r.getMessage()]
    assert len(warn) == 1, caplog.text
    return warn[0]


def test_a_stage_never_calibrated_is_named_alike_by_doctor_and_run(tmp_path, caplog):
    """Rule: after calibrating stage 1 only, a stage-2 worker's doctor line and run's
    warning both say "stage 2 is not calibrated in mode M", not "another bundle"."""
    if is_jetson():
        pytest.skip("the CPU path's mode is named here")
    ident, bundle = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR)
    mode = current_power_mode()
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(bundle.stage(1), ident, power_mode=mode,
                                 engine=dict(CPU, threads=1))])
    words = "stage 2 is not calibrated in mode %s" % mode
    # the mode pinned to the one calibrated: a VM's CPU-path name follows its clock
    checks, _ = check_node(_node(tmp_path, "w2", stage=2, capacity_profile=path,
                                 power_mode=mode))
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN and words in line.detail, line
    assert "another bundle" not in line.detail
    assert words in _run_warning(tmp_path, caplog, "w2a", capacity_profile=path,
                                 power_mode=mode)


def test_a_pinned_mode_calibrate_cannot_write_here_says_to_change_power_mode(tmp_path,
                                                                           caplog):
    """Rule: with power_mode pinning a CPU-path mode this machine is not in, doctor's fix
    and run's warning say to set power_mode to the mode calibrate measures here (or remove
    it), or to calibrate with the machine in the pinned mode; doctor's fix does not end at a
    calibrate command that could only write the active mode."""
    if is_jetson():
        pytest.skip("on a Jetson calibrate switches to the nvpmodel modes it names")
    ident, bundle = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(s, ident, power_mode=host.read_cpu_mode_name(),
                                 engine=dict(CPU, threads=1)) for s in bundle.stages])
    checks, _ = check_node(_node(tmp_path, "w1", capacity_profile=path, power_mode=PINNED))
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN and "mode %s is not calibrated" % PINNED in line.detail, line
    now = _active(line.fix)  # the CPU-path name as doctor read it (a VM's follows its clock)
    assert "calibrate measures only the mode active now here, %s, never %s" % (
        now, PINNED) in line.detail
    assert line.fix.startswith('set power_mode = "%s" in the config (or remove it), or run '
                               '`edge-agent calibrate ' % now), line.fix
    assert line.fix.endswith("` with this machine in mode %s" % PINNED), line.fix
    warn = _run_warning(tmp_path, caplog, "w1a", capacity_profile=path, power_mode=PINNED)
    assert 'set power_mode = "%s" in the node config (or remove it)' % _active(warn) in warn
    assert "or calibrate with this machine in mode %s" % PINNED in warn, warn


def _active(text):
    """The mode a "set power_mode = NAME" fix names: a CPU-path name, not the pinned one."""
    got = re.search(r'set power_mode = "([^"]+)"', text)
    assert got and got.group(1).startswith("cpu-") and got.group(1) != PINNED, text
    return got.group(1)
