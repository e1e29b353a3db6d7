"""``edge-agent calibrate`` on the CPU path (no jtop here) with the real bundle and
onnxruntime, as a real subprocess: the profile is written, reloads, ``lookup_capacity`` finds
it, ``--show`` prints it, stale entries are reported, misuse fails with one line, the
online estimate follows an injected slow-down of the real engine, and a worker started with the
profile uses its mu."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from calibration.online import OnlineCapacityEstimator
from calibration.profile import load_profile, lookup_capacity
from tests.integration.calibration_fixtures import (
    REPO,
    SlowedEngine,
    calibration_bundle,
    change_stage_file,
)


def _cli(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "agent", "calibrate"] + list(args),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One CPU-path calibration of every stage, shared by the tests of this module."""
    tmp = str(tmp_path_factory.mktemp("calibrate"))
    bundle_dir = calibration_bundle(tmp)
    state_dir = os.path.join(tmp, "state")
    proc = _cli(
        "--bundle",
        bundle_dir,
        "--seconds",
        "0.4",
        "--warmup",
        "0.1",
        "--state-dir",
        state_dir,
    )
    assert proc.returncode == 0, proc.stderr
    return bundle_dir, state_dir, proc


def test_profile_is_written_reloads_and_lookup_returns_it(calibrated):
    """Every stage gets an entry; lookup_capacity (this machine, its current mode) returns its mu."""
    from engines.bundle import load_bundle

    bundle_dir, state_dir, proc = calibrated
    bundle = load_bundle(bundle_dir)
    profile_path = os.path.join(state_dir, "calibration.json")
    prof = load_profile(profile_path)
    assert sorted(e.stage for e in prof.entries) == [s.index for s in bundle.stages]
    assert "mode cpu-" in proc.stderr and "stage 1" in proc.stderr  # the progress lines
    for stage in bundle.stages:
        entry = [e for e in prof.entries if e.stage == stage.index][0]
        assert entry.backend == "onnxruntime" and entry.stage_sha256 == stage.sha256
        assert entry.samples >= 5 and entry.service_time_p90_s >= entry.service_time_median_s
        assert entry.capacity_flops == pytest.approx(stage.flops / entry.service_time_median_s)
        assert lookup_capacity(profile_path, stage, "onnxruntime", "fp32") == entry.capacity_flops
        assert lookup_capacity(profile_path, stage, "onnxruntime", "fp16") is None


def test_show_prints_a_table_with_every_stage(calibrated):
    """--show prints one row per mode and stage under a board/L4T header."""
    bundle_dir, state_dir, _ = calibrated
    proc = _cli("--show", "--state-dir", state_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("board: ") and "L4T: " in lines[0]
    assert "median ms" in lines[1] and "mu FLOP/s" in lines[1]
    assert len([ln for ln in lines if ln.startswith("cpu-")]) == len(
        load_profile(os.path.join(state_dir, "calibration.json")).entries
    )


def test_changed_stage_is_reported_stale_and_no_longer_looked_up(calibrated, tmp_path):
    """After a stage file changes, --show --bundle marks its entry STALE and lookup returns None."""
    import shutil

    from engines.bundle import load_bundle

    bundle_dir, state_dir, _ = calibrated
    changed = str(tmp_path / "bundle")
    shutil.copytree(bundle_dir, changed)
    change_stage_file(changed, 1)
    proc = _cli("--show", "--state-dir", state_dir, "--bundle", changed)
    assert proc.returncode == 0, proc.stderr
    stale = [ln for ln in proc.stdout.splitlines() if "STALE" in ln]
    assert len(stale) == 1 and stale[0].split()[1] == "1"
    stage1 = load_bundle(changed).stages[0]
    assert lookup_capacity(os.path.join(state_dir, "calibration.json"), stage1, "onnxruntime", "fp32") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--modes", "0,2", "--seconds", "0.1"],
            "--modes 0,2 needs jetson-stats' jtop service",
        ),
        (["--stages", "9", "--seconds", "0.1"], "--stages: bundle"),
        (
            ["--modes", "fast"],
            "--modes: expected all, current or comma-separated mode ids",
        ),
        (["--precision", "int8"], "precision int8 is not supported (TensorRT INT8 needs"),
    ],
)
def test_misuse_fails_with_one_line(calibrated, tmp_path, args, message):
    """Wrong --modes/--stages values exit 2 with one line naming the option; int8 is refused
    with its reason, as the node config refuses it."""
    bundle_dir, _, _ = calibrated
    proc = _cli("--bundle", bundle_dir, "--state-dir", str(tmp_path / "s"), *args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent calibrate: error: ") and message in last


def test_a_folder_as_the_profile_is_refused_before_its_lock_is_made(tmp_path):
    """--profile naming a folder is one line naming it, and leaves no FOLDER.lock beside it."""
    folder = tmp_path / "adir"
    folder.mkdir()
    proc = _cli("--show", "--profile", str(folder))
    assert proc.returncode == 2 and "--profile: %s is a directory" % folder in proc.stderr
    assert not (tmp_path / "adir.lock").exists()


def test_show_without_profile_is_a_clear_error(tmp_path):
    """--show on a state directory without a profile says so in one line."""
    proc = _cli("--show", "--state-dir", str(tmp_path))
    assert proc.returncode == 2 and "no such calibration profile" in proc.stderr


def test_online_estimate_follows_an_injected_slow_down(calibrated):
    """Starting from the profile's mu, the online estimate falls to the slowed engine's speed
    within a few slots and reports drift."""
    from engines.loader import load_engine
    from engines.bundle import load_bundle

    bundle_dir, state_dir, _ = calibrated
    stage = load_bundle(bundle_dir).stages[0]
    mu_profile = lookup_capacity(os.path.join(state_dir, "calibration.json"), stage, "onnxruntime", "fp32")
    assert mu_profile is not None
    engine = SlowedEngine(load_engine(stage, backend="onnxruntime", threads=1))
    est = OnlineCapacityEstimator(stage.flops, mu_profile, drift_fraction=0.3)
    x = np.random.default_rng(0).standard_normal(stage.input_shape).astype(stage.input_dtype)
    median_s = stage.flops / mu_profile
    # 20x the calibrated service time (at least 5 ms): far beyond any noise of a loaded machine
    engine.slow_down(max(0.005, 19 * median_s))
    slots_needed = None
    times = []
    for slot in range(1, 6):
        for _ in range(10):  # tasks served per slot
            t0 = time.perf_counter()
            engine.run(x)
            times.append(time.perf_counter() - t0)
            est.observe(times[-1])
        if slots_needed is None and est.drifted() and est.capacity_flops < mu_profile / 5:
            slots_needed = slot
    engine.engine.close()
    assert slots_needed is not None and slots_needed <= 3
    slowed_mu = stage.flops / float(np.median(times))
    assert est.capacity_flops == pytest.approx(slowed_mu, rel=0.5)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_agent_started_with_the_profile_reports_its_mu(calibrated, tmp_path, precision):
    """A worker whose config names the calibration profile uses the profile's mu (stats.json),
    looked up under the precision its engine runs: fp16 asked of an onnxruntime without
    TensorRT runs fp32, which calibrate measured and stored as fp32."""
    from tests.integration.agent_cluster import Cluster

    bundle_dir, state_dir, _ = calibrated
    profile_path = os.path.join(state_dir, "calibration.json")
    entry = [e for e in load_profile(profile_path).entries if e.stage == 1][0]
    cluster = Cluster(str(tmp_path), bundle_dir, {"src": 0, "w1": 1, "w2": 2, "w3": 3, "w4": 4})
    try:
        # its neighbours need not run
        cluster.start("w1", capacity_profile=profile_path, precision=precision)
        cluster.wait_for(lambda: (cluster.stats("w1") or {}).get("capacity_flops"), 120, "w1 stats")
        assert cluster.stats("w1")["capacity_flops"] == pytest.approx(entry.capacity_flops)
    finally:
        cluster.stop_all()
