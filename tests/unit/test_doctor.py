"""`edge-agent doctor`: one OK/WARN/FAIL line per check with the fix under each WARN/FAIL, JSON
on request, exit status 1 exactly when a check fails; on a Jetson (an L4T release file under the
root) the index's CPU onnxruntime and a numpy too new for the JetPack are failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from agent.ops.doctor import FAIL, OK, WARN, Check, Context, check_board, check_jtop, check_numpy
from agent.ops.doctor import check_onnxruntime, run_checks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jetson_root(tmp_path, release="# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref\n"):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(release)
    return Context(root=str(tmp_path), state_dir=str(tmp_path), cache_dir=str(tmp_path))


def test_every_line_has_a_status_and_warn_or_fail_has_a_fix(tmp_path):
    checks = run_checks(Context(state_dir=str(tmp_path), cache_dir=str(tmp_path)))
    assert {c.name for c in checks} >= {"board", "python", "numpy", "onnxruntime", "tensorrt",
                                        "cuda-python", "jtop", "service user", "state dir",
                                        "cache dir", "bundle", "calibration"}
    for c in checks:
        assert c.status in (OK, WARN, FAIL)
        assert (c.fix != "") == (c.status != OK), c
    assert Check("x", WARN, "seen", "do this").line() == "WARN x: seen\n     fix: do this"


def test_a_jetson_with_the_index_onnxruntime_fails_with_nvidias_wheel_as_the_fix(tmp_path):
    ctx = _jetson_root(tmp_path)
    assert "L4T 35.4.1 (JetPack 5.x)" in check_board(ctx).detail
    ort = check_onnxruntime(ctx)
    import onnxruntime

    if onnxruntime.get_device() == "CPU":
        assert ort.status == FAIL and "NVIDIA's onnxruntime-gpu wheel" in ort.fix
    numpy_check = check_numpy(ctx)
    too_new = tuple(int(p) for p in np.__version__.split(".")[:2]) >= (1, 24)
    assert (numpy_check.status == FAIL) == too_new and (not too_new or "numpy<1.24" in numpy_check.fix)


def test_off_a_jetson_no_jtop_is_fine_and_an_unreachable_service_is_a_warning(tmp_path):
    import types

    class Refused(Exception):
        pass

    class Client:
        def __init__(self, interval):
            pass

        def __enter__(self):
            raise Refused("The jtop.service is not active. Please run: sudo systemctl restart jtop.service")

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(__version__="7.2.2", jtop=Client, JtopException=Refused)
    ctx = Context(root=str(tmp_path), jtop_module=fake)
    got = check_jtop(ctx)
    assert got.status == WARN and "jtop.service" in got.fix
    ctx = _jetson_root(tmp_path)
    ctx.jtop_module = types.SimpleNamespace(__version__="4.2.0", jtop=Client, JtopException=Refused)
    assert check_jtop(ctx).status == FAIL and ">=4.3" in check_jtop(ctx).fix


def test_cli_json_and_exit_status_agree(tmp_path):
    """--json is one object; the exit status is 1 exactly when a check FAILs."""
    proc = subprocess.run([sys.executable, "-m", "agent", "doctor", "--json", "--state-dir",
                           str(tmp_path), "--cache-dir", str(tmp_path)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120)
    report = json.loads(proc.stdout)
    failed = any(c["status"] == FAIL for c in report["checks"])
    assert proc.returncode == (1 if failed else 0) and report["ok"] is (not failed), proc.stderr


def test_a_bundle_whose_stage_does_not_run_fails_the_bundle_check(tmp_path):
    """``doctor`` runs each stage as a worker does at start-up (onnxruntime on the CPU, a zero
    input): a stage file the runtime cannot load fails the check even with its hash matching,
    naming the stage and the fix; the demo bundle passes."""
    import shutil

    from agent.ops.doctor import check_bundle
    from engines.bundle import sha256_file
    from engines.demo import DEMO_BUNDLE_DIR

    assert check_bundle(Context(state_dir=str(tmp_path))).status == OK
    bundle = str(tmp_path / "bundle")
    shutil.copytree(DEMO_BUNDLE_DIR, bundle)
    with open(os.path.join(bundle, "stage2.onnx"), "wb") as f:
        f.write(b"\x00garbage" * 64)
    manifest_path = os.path.join(bundle, "bundle.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["stages"][1]["sha256"] = sha256_file(os.path.join(bundle, "stage2.onnx"))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    got = check_bundle(Context(bundle=bundle, state_dir=str(tmp_path)))
    assert got.status == FAIL and "stage 2 (stage2.onnx) does not run" in got.detail
    assert "rebuild" in got.fix


def test_a_missing_service_user_is_fixed_by_the_documented_install_command():
    """On a fresh device edge-agent is on no PATH under sudo: the fix is the install command
    of docs/deployment.md and README, ``sudo python3 -m agent install`` from the clone, and
    that command is what those documents say."""
    from agent.ops.doctor import check_groups

    line = check_groups(Context(user="no-such-user-edge-agent-doctor"))
    assert line.status == WARN and "no user no-such-user-edge-agent-doctor" in line.detail
    assert "sudo python3 -m agent install" in line.fix and "sudo edge-agent" not in line.fix
    for doc in ("README.md", os.path.join("docs", "deployment.md")):
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            assert "sudo python3 -m agent install" in f.read(), doc
