"""A worker without a calibration entry for its engine says which part of the key has none.

An entry is keyed by (board, L4T, power mode, stage sha256, backend, precision); the start-up
warning names the mode and the first part no entry matches (``agent.node.profilekey``), with
the calibrate command that writes it, and the start-up capacity line names the mode.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from agent.node.profilekey import calibrate_hint, missing_part
from calibration.profile import Profile, ProfileEntry, UnavailableMode

STAGE = SimpleNamespace(index=1, sha256="a" * 64)  # what missing_part reads of a StageSpec


def _entry(**kw):
    values = dict(board="orin", l4t="35.4.1", power_mode="15W", stage=1, stage_sha256="a" * 64,
                  backend="onnxruntime", precision="fp32", flops=1e6, samples=10,
                  service_time_median_s=0.001, service_time_p90_s=0.001, capacity_flops=1e9,
                  measured_at="2026-01-01T00:00:00Z")
    values.update(kw)
    return ProfileEntry(**values)


def _part(profile, **kw):
    key = dict(board="orin", l4t="35.4.1", mode="15W", stage=STAGE, backend="onnxruntime",
               precision="fp32")
    key.update(kw)
    return missing_part(profile, **key)


def test_each_part_of_the_key_is_named_with_what_the_profile_holds():
    """board, L4T release, mode (with calibrate's unavailable reason), stage, stage sha256,
    backend, precision: the first that has no entry is named; a full match names none."""
    prof = Profile((_entry(), _entry(power_mode="30W", backend="tensorrt")),
                   (UnavailableMode("orin", "35.4.1", "7W", "needs a reboot", "t"),))
    assert _part(prof) == ("", "")
    part, line = _part(prof, board="xavier")
    assert part == "board" and "'xavier'" in line and "orin" in line
    part, line = _part(prof, l4t="36.2.0")
    assert part == "l4t" and "L4T 36.2.0" in line and "35.4.1" in line
    part, line = _part(prof, mode="MAXN")
    assert part == "mode" and "mode MAXN is not calibrated" in line and "15W, 30W" in line
    part, line = _part(prof, mode="7W")
    assert part == "mode" and "unavailable: needs a reboot" in line
    part, line = _part(prof, stage=SimpleNamespace(index=2, sha256="b" * 64))
    assert part == "stage" and "stage 2 is not calibrated in mode 15W" in line
    part, line = _part(prof, stage=SimpleNamespace(index=1, sha256="c" * 64))
    assert part == "sha256" and "c" * 12 in line and "a" * 12 in line and "stale" in line
    part, line = _part(prof, mode="30W")
    assert part == "backend" and "with backend tensorrt, not onnxruntime" in line
    part, line = _part(prof, precision="fp16")
    assert part == "precision" and "with precision fp32, not fp16" in line


def test_the_calibrate_command_measures_this_mode_or_every_mode():
    """A mode (or a stage in it) not calibrated: ``--modes current``; another board, release,
    stage file, backend or precision: ``--modes all``; always with the engine's backend and
    precision."""
    cmd = calibrate_hint("/opt/b", "/var/lib/edge-agent/calibration.json", "onnxruntime",
                         "fp32", "mode")
    assert "--modes current" in cmd and "--backend onnxruntime --precision fp32" in cmd
    assert "--modes all" in calibrate_hint("/opt/b", "/p.json", "tensorrt", "fp16", "l4t")


def test_a_worker_without_an_entry_names_mode_and_cause_then_times_its_engine(tmp_path,
                                                                              caplog):
    """A real worker whose profile holds its stage in another mode only: the warning names the
    mode, that it is not calibrated, and the command; the capacity line names the mode."""
    from calibration.host import read_host_identity
    from calibration.profile import update_profile
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR
    from tests.unit.built_worker import built_worker

    ident, spec = read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(1)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(board=ident.board, l4t=ident.l4t, power_mode="MAXN",
                                 stage_sha256=spec.sha256, flops=float(spec.flops))])
    caplog.set_level(logging.INFO)
    built = built_worker(str(tmp_path / "run"), capacity_profile=path, power_mode="15W",
                         warmup_runs=0, timing_runs=2)
    built.close()
    warn = [r.getMessage() for r in caplog.records if "no calibration entry" in r.getMessage()]
    assert len(warn) == 1, caplog.text
    assert "stage 1 in mode 15W" in warn[0] and "mode 15W is not calibrated" in warn[0]
    assert "(calibrated: MAXN)" in warn[0] and "--modes current --backend onnxruntime" in warn[0]
    assert "timing the engine instead" in warn[0]
    assert "(timed, mode 15W," in caplog.text
