"""The engine thread count is part of a calibration entry's key where it sets the speed
(onnxruntime on the CPU): entries measured with different ``--threads`` live side by side, a
worker uses only the entry of its own ``engine_threads``, and one whose entries are all of
another count is told so, with both counts and the calibrate command (``--threads N``), by
``run``'s lookup and by ``doctor``. TensorRT and GPU-provider entries serve any thread count;
a CPU entry that records no count (an older or hand-written profile) serves any, with a
WARNING. Real profiles (``update_profile`` and the ``calibrate`` command), real configs."""

from __future__ import annotations

import json
import logging

import pytest

from agent.cli import main
from agent.node.profilekey import calibrate_hint, missing_entry
from agent.ops.doctor import OK, WARN
from agent.ops.doctor_node import check_node
from calibration import host
from calibration.profile import ProfileEntry, load_profile, lookup_capacity, update_profile
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_doctor_node import QUICK, _by_name, _node

MODE = "MAXN"
CPU = {"backend": "onnxruntime", "device": "CPU"}


def _entry(stage, ident, median_s=0.001, **over):
    values = dict(board=ident.board, l4t=ident.l4t, power_mode=MODE, stage=stage.index,
                  stage_sha256=stage.sha256, backend="onnxruntime", precision="fp32",
                  flops=float(stage.flops), samples=10, service_time_median_s=median_s,
                  service_time_p90_s=median_s, capacity_flops=float(stage.flops) / median_s,
                  measured_at="2026-01-01T00:00:00Z", bundle="demo")
    values.update(over)
    return ProfileEntry(**values)


def _cpu(threads):
    return dict(CPU, threads=threads)


def test_entries_of_different_thread_counts_live_side_by_side(tmp_path):
    """Rule: a measurement at 2 threads does not replace the one at 1 thread (it did: a
    profile then held stage 1 at 2 threads and nothing at 1); one at the same count does."""
    ident, stage = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(1)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(stage, ident, 0.001, engine=_cpu(1))])
    update_profile(path, [_entry(stage, ident, 0.002, engine=_cpu(2))])
    assert sorted(e.engine["threads"] for e in load_profile(path).entries) == [1, 2]
    update_profile(path, [_entry(stage, ident, 0.003, engine=_cpu(2))])
    held = {e.engine["threads"]: e.service_time_median_s for e in load_profile(path).entries}
    assert held == {1: 0.001, 2: 0.003}


def test_lookup_uses_only_the_entry_of_the_engines_thread_count(tmp_path):
    """Rule: lookup_capacity with ``threads`` returns that count's entry, and None when the
    profile holds only other counts; the reason names both counts, and the calibrate command
    carries ``--threads``."""
    ident, stage = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(1)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(stage, ident, 0.001, engine=_cpu(1)),
                          _entry(stage, ident, 0.004, engine=_cpu(2))])
    for threads, median_s in ((1, 0.001), (2, 0.004)):
        mu = lookup_capacity(path, stage, "onnxruntime", "fp32", MODE, ident, threads=threads)
        assert mu == float(stage.flops) / median_s
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", MODE, ident, threads=4) is None
    part, why = missing_entry(path, stage, "onnxruntime", "fp32", MODE, ident, threads=4)
    assert part == "threads"
    assert "with 1, 2 engine thread(s) only, not the 4 of engine_threads" in why, why
    hint = calibrate_hint(DEMO_BUNDLE_DIR, path, "onnxruntime", "fp32", part, 4)
    assert hint.endswith("--modes current --backend onnxruntime --precision fp32 --threads 4")


def test_tensorrt_and_gpu_entries_serve_any_thread_count(tmp_path):
    """Rule: threads are no part of the key of a TensorRT entry or an onnxruntime entry on a
    GPU provider (they ignore intra-op threads)."""
    ident, bundle = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [
        _entry(bundle.stage(1), ident, backend="tensorrt", precision="fp16",
               engine={"backend": "tensorrt", "threads": 1}),
        _entry(bundle.stage(2), ident, engine={"backend": "onnxruntime", "device": "GPU",
                                               "threads": 1})])
    assert lookup_capacity(path, bundle.stage(1), "tensorrt", "fp16", MODE, ident, threads=6)
    assert lookup_capacity(path, bundle.stage(2), "onnxruntime", "fp32", MODE, ident, threads=6)


def test_a_cpu_entry_without_a_thread_count_serves_any_with_a_warning(tmp_path, caplog):
    """Rule: an older profile's CPU entry (no ``engine.threads``) is used for any
    engine_threads, with a WARNING naming the count and ``--threads``; an entry of the exact
    count is preferred to it."""
    ident, stage = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(1)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(stage, ident, 0.002, engine=dict(CPU))])
    caplog.set_level(logging.WARNING, logger="calibration.profile")
    mu = lookup_capacity(path, stage, "onnxruntime", "fp32", MODE, ident, threads=3)
    assert mu == float(stage.flops) / 0.002
    assert "records no engine thread count; used for engine_threads 3" in caplog.text
    assert "--threads 3" in caplog.text
    update_profile(path, [_entry(stage, ident, 0.005, engine=_cpu(3))])
    mu = lookup_capacity(path, stage, "onnxruntime", "fp32", MODE, ident, threads=3)
    assert mu == float(stage.flops) / 0.005


def test_doctor_warns_when_the_entries_are_of_another_thread_count(tmp_path):
    """Rule: doctor's node calibration line is OK only with an entry of the worker's own
    engine_threads (it was OK for a 2-thread worker holding 1-thread entries, while the
    worker then used them); otherwise a WARN naming both counts, with the calibrate command
    at ``--threads`` of the config."""
    ident, stage = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(4)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [_entry(stage, ident, engine=_cpu(1))])
    checks, _ = check_node(_node(tmp_path, "w2", capacity_profile=path, engine_threads=2),
                           mode=MODE)
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN, line
    assert "stage 4 is calibrated in mode MAXN with 1 engine thread(s) only, not the 2 of " \
           "engine_threads" in line.detail
    assert "--threads 2" in line.fix and "edge-agent calibrate" in line.fix
    update_profile(path, [_entry(stage, ident, engine=_cpu(2))])
    checks, _ = check_node(_node(tmp_path, "w3", capacity_profile=path, engine_threads=2),
                           mode=MODE)
    line = _by_name(checks)["node calibration"]
    assert line.status == OK and "engine_threads 2" in line.detail, line


def test_calibrate_at_two_threads_keeps_the_one_thread_entries(tmp_path, capsys):
    """Rule: the real ``calibrate --threads 2`` adds its entry beside the ``--threads 1`` one
    of the same stage and mode, and ``--show`` lists both with their thread counts."""
    state = str(tmp_path / "state")
    base = ["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", state, "--stages", "1"]
    assert main(base + ["--threads", "1"] + QUICK) == 0
    assert main(base + ["--threads", "2"] + QUICK) == 0
    with open(str(tmp_path / "state" / "calibration.json")) as f:
        entries = json.load(f)["entries"]
    if entries[0]["engine"].get("device") != "CPU":
        pytest.skip("the stage ran on a GPU provider here: threads are no part of its key")
    assert sorted((e["stage"], e["engine"]["threads"]) for e in entries) == [(1, 1), (1, 2)]
    path = str(tmp_path / "state" / "calibration.json")
    stage, mode = load_bundle(DEMO_BUNDLE_DIR).stage(1), entries[0]["power_mode"]
    by_threads = {e["engine"]["threads"]: e["service_time_median_s"] for e in entries}
    for threads in (1, 2):
        mu = lookup_capacity(path, stage, "onnxruntime", "fp32", mode, threads=threads)
        assert mu == float(stage.flops) / by_threads[threads]
    capsys.readouterr()
    assert main(["calibrate", "--show", "--state-dir", state, "--bundle", DEMO_BUNDLE_DIR]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["mode", "stage", "backend", "threads"]
    rows = [ln.split() for ln in lines if ln.startswith(mode)]
    assert sorted((r[1], r[3]) for r in rows) == [("1", "1"), ("1", "2")]
