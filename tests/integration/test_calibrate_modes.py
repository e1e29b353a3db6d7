"""A calibration run over power modes, through the FAKE jtop of ``tests.unit.test_jtop_adapter``
(a stand-in for jetson-stats' documented client API; no Jetson exists here) with real engines:
every mode measured or marked unavailable, the original mode restored after a normal end, an
exception, SIGTERM/SIGINT sent to a real subprocess, and by the next run after a crashed
(SIGKILLed) one; force is never used; without the jtop service the CPU path is taken."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.errors import UsageError
from calibration import host, runner
from calibration.modes import ORIGINAL_MODE_FILE
from calibration.profile import load_profile, lookup_capacity
from tests.integration.calibration_fixtures import REPO, calibration_bundle
from tests.unit.test_jtop_adapter import MODELS, fake_module, new_board, read_board

SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from calibration.runner import CalibrationConfig, CalibrationInterrupted, calibrate
from tests.unit.test_jtop_adapter import fake_module
cfg = CalibrationConfig(bundle_dir=sys.argv[1], profile_path=sys.argv[2], state_dir=sys.argv[3],
                        stages=(1,), modes="all", seconds=600.0, warmup_s=0.05,
                        switch_timeout_s=30.0, jtop_interval_s=0.005)
try:
    calibrate(cfg, jtop_module=fake_module(sys.argv[4]))
except CalibrationInterrupted as exc:
    sys.exit(128 + exc.signum)
"""


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return calibration_bundle(str(tmp_path_factory.mktemp("modes")))


def _config(tmp_path, bundle_dir, **kw):
    values = dict(
        bundle_dir=bundle_dir,
        profile_path=str(tmp_path / "profile.json"),
        state_dir=str(tmp_path / "state"),
        stages=(1,),
        modes="all",
        seconds=0.05,
        warmup_s=0.02,
        switch_timeout_s=1.0,
        jtop_interval_s=0.002,
    )
    values.update(kw)
    return runner.CalibrationConfig(**values)


def _no_force(board):
    return all(not r["force"] for r in board["requests"])


def test_all_modes_measured_or_unavailable_and_original_restored(tmp_path, bundle_dir):
    """--modes all: settable modes are measured with jtop readings, a stuck mode and a
    reboot-only mode are recorded unavailable, and the board ends in its original mode."""
    board = new_board(tmp_path / "board.json", mode=1, stuck=[2])
    cfg = _config(tmp_path, bundle_dir)
    result = runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    state = read_board(board)
    assert state["mode"] == 1 and _no_force(state)
    assert not os.path.exists(os.path.join(cfg.state_dir, ORIGINAL_MODE_FILE))
    assert sorted(e.power_mode_id for e in result.entries) == [0, 1, 4]
    assert sorted(u.power_mode_id for u in result.unavailable) == [2, 3]
    prof = load_profile(cfg.profile_path)
    entry = [e for e in prof.entries if e.power_mode_id == 4][0]
    assert entry.power_mode == MODELS[4] and entry.jetpack == "5.1.1"
    assert entry.power_avg_w == pytest.approx(5.595) and entry.clocks["gpu_max_khz"] == 1109250
    assert entry.temperature_peak_c["tj"] == 41.5 and entry.jetson_clocks is True and not entry.throttled
    from engines.bundle import load_bundle

    stage = load_bundle(bundle_dir).stages[0]
    mu = lookup_capacity(
        cfg.profile_path,
        stage,
        entry.backend,
        "fp32",
        MODELS[4],
        host.read_host_identity(),
    )
    assert mu == entry.capacity_flops


def test_original_mode_restored_after_an_exception(tmp_path, bundle_dir, monkeypatch):
    """An exception in the middle of a run still restores the original mode."""
    board = new_board(tmp_path / "board.json", mode=1)
    real_measure = runner.measure_engine
    calls = []

    def failing_measure(*args, **kwargs):  # the second measurement fails, e.g. an engine error
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("engine failed")
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(runner, "measure_engine", failing_measure)
    cfg = _config(tmp_path, bundle_dir)
    with pytest.raises(RuntimeError, match="engine failed"):
        runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    state = read_board(board)
    assert state["requests"][0]["id"] == 0  # it had switched before failing
    assert state["mode"] == 1 and _no_force(state)
    assert not os.path.exists(os.path.join(cfg.state_dir, ORIGINAL_MODE_FILE))


def _start(tmp_path, bundle_dir, board):
    script = tmp_path / "run_calibration.py"
    script.write_text(SCRIPT.format(repo=REPO))
    stderr = open(str(tmp_path / "stderr.txt"), "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            bundle_dir,
            str(tmp_path / "profile.json"),
            str(tmp_path / "state"),
            board,
        ],
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    return proc


def _wait_measuring(proc, tmp_path, board, timeout_s=120.0):
    """Poll until the subprocess has switched away from mode 1 and is timing a stage."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(str(tmp_path / "stderr.txt")).read()
        text = open(str(tmp_path / "stderr.txt")).read()
        if "measuring" in text and read_board(board)["mode"] == 0:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("calibration subprocess did not start measuring in %.0f s" % timeout_s)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_original_mode_restored_on_signal(tmp_path, bundle_dir, signum):
    """SIGTERM/SIGINT to a real calibration process: it restores the original mode and exits 128+N."""
    board = new_board(tmp_path / "board.json", mode=1)
    proc = _start(tmp_path, bundle_dir, board)
    try:
        _wait_measuring(proc, tmp_path, board)
        assert os.path.exists(str(tmp_path / "state" / ORIGINAL_MODE_FILE))
        proc.send_signal(signum)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = open(str(tmp_path / "stderr.txt")).read()
    assert rc == 128 + signum, stderr
    state = read_board(board)
    assert state["mode"] == 1 and state["pending"] is None and _no_force(state)
    assert not os.path.exists(str(tmp_path / "state" / ORIGINAL_MODE_FILE))


def test_next_run_restores_after_a_crashed_run(tmp_path, bundle_dir):
    """A run killed with SIGKILL leaves the board switched; the next run restores the saved
    original mode first (and then measures in it)."""
    board = new_board(tmp_path / "board.json", mode=1)
    proc = _start(tmp_path, bundle_dir, board)
    try:
        _wait_measuring(proc, tmp_path, board)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert read_board(board)["mode"] == 0
    state_dir = tmp_path / "state"
    with open(str(state_dir / ORIGINAL_MODE_FILE)) as f:
        assert json.load(f)["id"] == 1
    cfg = _config(tmp_path, bundle_dir, modes="current", switch_timeout_s=30.0)
    result = runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    assert read_board(board)["mode"] == 1 and _no_force(read_board(board))
    assert not os.path.exists(str(state_dir / ORIGINAL_MODE_FILE))
    assert [e.power_mode for e in result.entries] == [MODELS[1]]


def test_without_jtop_service_the_cpu_path_is_taken(tmp_path, bundle_dir):
    """JtopException at connect: 'all' measures the one CPU-path mode; explicit ids are refused."""
    absent = str(tmp_path / "no-board.json")
    cfg = _config(tmp_path, bundle_dir, modes="all")
    result = runner.calibrate(cfg, jtop_module=fake_module(absent), stream=io.StringIO())
    assert [e.power_mode for e in result.entries] == [host.read_cpu_mode_name()]
    assert result.entries[0].power_mode_id is None
    with pytest.raises(UsageError, match="needs jetson-stats' jtop service"):
        runner.calibrate(_config(tmp_path, bundle_dir, modes="0,1"), jtop_module=fake_module(absent))


def test_unknown_mode_id_is_a_usage_error(tmp_path, bundle_dir):
    """--modes with an id the board does not have names the available modes."""
    board = new_board(tmp_path / "board.json", mode=1)
    with pytest.raises(UsageError, match="no power mode with id 9.*0=MODE_15W_2CORE"):
        runner.calibrate(_config(tmp_path, bundle_dir, modes="1,9"), jtop_module=fake_module(board))
    assert read_board(board)["requests"] == []


def test_saved_mode_that_cannot_be_restored_is_a_clear_error(tmp_path, bundle_dir):
    """If the mode saved by a dead run cannot be restored, the run stops with one line saying
    how to fix it by hand, and the saved file is kept."""
    board = new_board(tmp_path / "board.json", mode=0, stuck=[2])
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / ORIGINAL_MODE_FILE).write_text(json.dumps({"id": 2, "name": MODELS[2]}))
    cfg = _config(tmp_path, bundle_dir, switch_timeout_s=0.3)
    with pytest.raises(UsageError, match="cannot be restored.*nvpmodel -m"):
        runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    assert (state_dir / ORIGINAL_MODE_FILE).exists() and _no_force(read_board(board))


def test_a_stage_of_zero_flops_is_refused_before_anything_runs(tmp_path):
    """A stage whose manifest counts 0 FLOPs has no capacity in FLOP/s to measure: the run
    stops with a UsageError naming it before any mode switch, and writes no profile (such an
    entry made the whole profile unreadable)."""
    bundle = calibration_bundle(str(tmp_path))
    manifest_path = os.path.join(bundle, "bundle.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["stages"][0]["flops"] = 0
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    board = new_board(tmp_path / "board.json", mode=1)
    cfg = _config(tmp_path, bundle)
    with pytest.raises(UsageError, match=r"stage\(s\) 1 have flops 0"):
        runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    assert read_board(board)["requests"] == [] and not os.path.exists(cfg.profile_path)


def test_the_crashed_runs_mode_is_restored_before_the_engines_load(tmp_path, bundle_dir,
                                                                    monkeypatch):
    """The original mode a crashed run saved is restored before anything else touches the
    board: an engine that fails to load (or a TensorRT build taking minutes) comes after it."""
    import engines.loader

    board = new_board(tmp_path / "board.json", mode=0)  # left switched by a crashed run
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    with open(str(state_dir / ORIGINAL_MODE_FILE), "w") as f:
        json.dump({"id": 1, "name": MODELS[1], "pid": 1}, f)

    def broken(*args, **kwargs):
        raise RuntimeError("engine build failed")

    monkeypatch.setattr(engines.loader, "load_engine", broken)
    cfg = _config(tmp_path, bundle_dir, modes="current", switch_timeout_s=30.0)
    # one line naming the stage, as `run` gives it (not a traceback)
    with pytest.raises(UsageError, match="cannot be loaded as an engine .RuntimeError: engine "
                       "build failed"):
        runner.calibrate(cfg, jtop_module=fake_module(board), stream=io.StringIO())
    assert read_board(board)["mode"] == 1 and _no_force(read_board(board))
    assert not os.path.exists(str(state_dir / ORIGINAL_MODE_FILE))
