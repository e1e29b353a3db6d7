"""`edge-agent calibrate` as a field engineer meets it: bounded durations, a stage or mode named
twice measured once, a damaged profile refused before anything is measured, a profile that
cannot be written named with the options that fix it; a profile entry whose times give a
capacity no device has is refused when read, as the node config's emulated capacity is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from agent.commands.calibrate import _stages
from calibration import host
from calibration.profile import ProfileError, load_profile, lookup_capacity, update_profile
from calibration.runner import parse_modes
from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = host.HostIdentity(board="NVIDIA Jetson AGX Orin Developer Kit", l4t="35.4.1")


def _calibrate(tmp_path, *args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agent", "calibrate", "--bundle", DEMO_BUNDLE_DIR]
                          + list(args), cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


@pytest.mark.parametrize("option,value", [("--seconds", "inf"), ("--warmup", "1e300"),
                                          ("--switch-timeout", "86401")])
def test_durations_past_a_day_are_refused_not_run_for_ever(tmp_path, option, value):
    """--seconds, --warmup and --switch-timeout are at most 86400 s: an infinite one would keep
    the device out of service for good."""
    proc = _calibrate(tmp_path, "--state-dir", str(tmp_path / "st"), option, value)
    assert proc.returncode == 2
    assert "argument %s: must be > 0 and at most 86400 (a day), got %r" % (option, value) \
        in proc.stderr
    assert not (tmp_path / "st" / "calibration.json").exists()


def test_a_stage_or_mode_named_twice_is_measured_once_in_the_order_given():
    """--stages 3,1,3 measures stages 3 and 1; --modes 2,0,2 switches to modes 2 and 0."""
    assert _stages("3,1,3") == (3, 1)
    assert parse_modes("2,0,2") == (2, 0)
    assert parse_modes("all") is None


def test_a_damaged_profile_is_refused_before_any_stage_is_measured(tmp_path):
    """calibrate merges into the existing profile: one it cannot parse stops the run at once,
    naming the file and field, instead of after the first stage's measurement."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "calibration.json").write_text(json.dumps(
        {"format": "edge-agent-calibration-profile", "version": 1, "entries": [{"board": 1}]}))
    proc = _calibrate(tmp_path, "--state-dir", str(state), "--seconds", "30")
    assert proc.returncode == 2, proc.stderr
    assert "measuring" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent calibrate: error: %s: entries[0].board" % (
        state / "calibration.json"))
    assert "repair it or move it away" in last


def test_a_profile_folder_that_cannot_be_made_is_refused_before_measuring(tmp_path):
    """A --profile whose folder cannot be created (a file stands in its path) is refused before
    any engine is built or stage measured: one line naming the path, its cause and the options
    to change, exit 2."""
    (tmp_path / "plain").write_text("not a folder")
    proc = _calibrate(tmp_path, "--state-dir", str(tmp_path / "st"), "--seconds", "0.1",
                      "--warmup", "0.1", "--stages", "1", "--backend", "onnxruntime",
                      "--profile", str(tmp_path / "plain" / "calibration.json"))
    assert proc.returncode == 2, proc.stderr
    assert "measuring" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent calibrate: error: --profile: %s is a file, not a directory"
                           % (tmp_path / "plain")), last
    assert "give another --profile or --state-dir" in last


def _entry(**kw):
    from calibration.profile import ProfileEntry

    values = dict(board=HOST.board, l4t=HOST.l4t, power_mode="MAXN", power_mode_id=0,
                  bundle="demo", stage=1, stage_sha256="a" * 64, backend="onnxruntime",
                  precision="fp32", flops=2.0e6, samples=100, service_time_median_s=0.001,
                  service_time_p90_s=0.0012, capacity_flops=2.0e9,
                  measured_at="2026-11-22T16:40:00Z")
    values.update(kw)
    return ProfileEntry(**values)


def _edit(path, **fields):
    with open(path) as f:
        obj = json.load(f)
    obj["entries"][0].update(fields)
    with open(path, "w") as f:
        json.dump(obj, f)


def test_a_hand_edited_time_of_more_than_a_day_is_refused_with_its_field(tmp_path):
    """service_time_median_s above 86400 s is no measurement: the reader names the field."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry()])
    _edit(path, service_time_median_s=1e300)
    with pytest.raises(ProfileError, match=r"entries\[0\]\.service_time_median_s: must be > 0 "
                                           r"and at most 86400, got 1e\+300"):
        load_profile(path)


def test_a_time_giving_a_capacity_outside_the_emulation_range_is_refused_by_lookup(tmp_path):
    """A worker reads mu = flops / service_time_median_s; a median so small that mu passes
    1e24 FLOP/s is refused (the worker exits 78 with this line), never served."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry()])
    _edit(path, service_time_median_s=1e-300)
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=2.0e6)
    with pytest.raises(ProfileError, match="stage 1 in MAXN: flops / service_time_median_s = "
                                           "2e\\+306 FLOP/s, outside"):
        lookup_capacity(path, stage, "onnxruntime", "fp32", "MAXN", host_identity=HOST)


def test_a_hand_edited_capacity_is_named_as_having_no_effect(tmp_path, caplog):
    """mu comes from the measured time; an edited capacity_flops is logged as doing nothing."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry()])
    _edit(path, capacity_flops=8.0e9)
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=2.0e6)
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "MAXN",
                           host_identity=HOST) == pytest.approx(2.0e9)
    assert "capacity_flops 8e+09 is not flops / service_time_median_s" in caplog.text
