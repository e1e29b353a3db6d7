"""A Jetson whose jtop service cannot be reached: the L4T release file of the emulated Orin
(``emulated_orin.py``) added to /etc in a private mount namespace, an empty /run, and
jetson-stats' real client finding no service. The power mode is unknown
(``PowerModeUnknown``), never the CPU path's name, and a profile entry under the CPU path's
name is not used; ``calibrate`` refuses with one line (exit 2) and writes nothing; ``doctor``
FAILs jtop with a runnable fix and puts it before its calibrate fix (the service up is
``test_calibrate_emulated_orin.py``'s). Root only (mount namespace); this file is also the
script run inside the namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# run by the service user's stand-in: the active mode, and the lookup an agent makes at start
PROBE = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from calibration import host
from calibration.jtop_adapter import PowerModeUnknown
from calibration.profile import ProfileEntry, current_power_mode, lookup_capacity, update_profile
from engines.bundle import load_bundle
out = {}
try:
    out["mode"] = current_power_mode()
except PowerModeUnknown as exc:
    out["unknown"] = str(exc)
if len(sys.argv) > 3:  # a profile whose entry is under the CPU path's name on this board
    stage = load_bundle(sys.argv[2]).stage(1)
    ident = host.read_host_identity()
    update_profile(sys.argv[3], [ProfileEntry(
        board=ident.board, l4t=ident.l4t, power_mode=host.read_cpu_mode_name(), stage=1,
        stage_sha256=stage.sha256, backend="onnxruntime", precision="fp32", flops=stage.flops,
        samples=5, service_time_median_s=0.001, service_time_p90_s=0.001,
        capacity_flops=stage.flops / 0.001, measured_at="2026-01-01T00:00:00Z")])
    out["lookup"] = lookup_capacity(sys.argv[3], stage, "onnxruntime", "fp32")
print(json.dumps(out))
"""


def _probe(env, bundle, profile=""):
    args = [sys.executable, "-c", PROBE, REPO, bundle] + ([profile] if profile else [])
    proc = subprocess.run(args, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    got = json.loads(proc.stdout) if proc.stdout.strip() else {}
    got.update(rc=proc.returncode, stderr=proc.stderr[-3000:])
    return got


def _jetson_without_jtop(work: str) -> bool:
    """The emulated Orin's L4T release file (an overlay on /etc) and an empty /run (no jtop
    socket); no /fake_sys, which emulated_orin.py's own run mounts. False without overlayfs."""
    from tests.integration.emulated_orin import L4T_RELEASE

    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    for d in ("etc-upper", "etc-work"):
        os.makedirs(os.path.join(work, d))
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=/etc,upperdir=%s,"
                       "workdir=%s" % (os.path.join(work, "etc-upper"),
                                       os.path.join(work, "etc-work")), "/etc"]).returncode:
        return False
    with open("/etc/nv_tegra_release", "w") as f:
        f.write(L4T_RELEASE)
    return True


def main(out_dir: str, bundle: str) -> int:
    """Inside the namespace: the board without its jtop service."""
    sys.path.insert(0, REPO)
    work = os.path.join(out_dir, "work")
    os.makedirs(work)
    result = {"overlay": _jetson_without_jtop(work)}
    if result["overlay"]:
        run_env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
        result.update(_scenario(out_dir, work, bundle, run_env))
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


def _scenario(out_dir: str, work: str, bundle: str, run_env: dict) -> dict:
    result = {"down": _probe(run_env, bundle, os.path.join(work, "cpu-entry.json"))}
    state = os.path.join(out_dir, "state")
    cal = subprocess.run([sys.executable, "-m", "agent", "calibrate", "--bundle", bundle,
                          "--modes", "all", "--stages", "1", "--seconds", "0.2", "--state-dir",
                          state], cwd=REPO, env=run_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    result["calibrate"] = {"rc": cal.returncode, "stderr": cal.stderr,
                           "profile": os.path.exists(os.path.join(state, "calibration.json"))}
    os.makedirs(os.path.join(out_dir, "dstate"))
    with open(os.path.join(out_dir, "dstate", "calibration.json"), "w") as f, \
            open(os.path.join(work, "cpu-entry.json")) as src:
        f.write(src.read())
    doctor = subprocess.run([sys.executable, "-m", "agent", "doctor", "--json", "--state-dir",
                             os.path.join(out_dir, "dstate"), "--cache-dir", work], cwd=REPO,
                            env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    result["doctor"] = json.loads(doctor.stdout) if doctor.stdout.strip() else doctor.stderr
    return result


@pytest.fixture(scope="module")
def orin(tmp_path_factory):
    """Runs this file in a private mount namespace once; its result.json."""
    from tests.integration.calibration_fixtures import calibration_bundle
    from tests.integration.emulated_orin import run_in_namespace

    out = tmp_path_factory.mktemp("orin-nojtop")
    bundle = calibration_bundle(str(out))
    proc = run_in_namespace(os.path.abspath(__file__), [out, bundle])
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(str(out / "result.json")) as f:
        got = json.load(f)
    if not got["overlay"]:
        pytest.skip("no overlayfs here: /etc/nv_tegra_release cannot be added in the namespace")
    return got


def test_service_down_the_mode_is_unknown_and_no_cpu_path_entry_is_used(orin):
    """Rule: jtop.service stopped on a Jetson: current_power_mode raises PowerModeUnknown (the
    cause and the fix), and lookup_capacity returns None with a WARNING naming jtop even though
    the profile holds an entry under the CPU path's mode name for this board."""
    down = orin["down"]
    assert down["rc"] == 0, down["stderr"]
    assert "mode" not in down and "jtop service not reachable" in down["unknown"]
    assert "sudo usermod -aG jtop root" in down["unknown"]
    assert down["lookup"] is None
    assert "no entry used for stage 1: jtop service not reachable" in down["stderr"]


def test_calibrate_refuses_with_one_line_and_writes_nothing(orin):
    """Rule: `calibrate --modes all` on a Jetson with jtop down exits 2 with one line naming
    jtop and its fix, and writes no profile (it wrote a CPU-path entry under the Jetson)."""
    cal = orin["calibrate"]
    lines = [ln for ln in cal["stderr"].splitlines() if ln.strip()]
    assert cal["rc"] == 2 and not cal["profile"], cal
    assert len(lines) == 1 and lines[0].startswith("edge-agent calibrate: error: jtop service "
                                                   "not reachable (")
    assert "sudo systemctl enable --now jtop.service" in lines[0]


def test_doctor_fails_jtop_and_puts_its_fix_before_calibrate(orin):
    """Rule: doctor on the Jetson with jtop down: jtop FAILs with a systemctl command, and the
    calibration line says the mode is unknown with the jtop fix first (not a bare calibrate
    command, which would be refused)."""
    checks = {c["name"]: c for c in orin["doctor"]["checks"]}
    assert checks["jtop"]["status"] == "FAIL"
    assert checks["jtop"]["fix"] == "sudo systemctl enable --now jtop.service"
    cal = checks["calibration"]
    assert cal["status"] == "WARN" and "the power mode is unknown" in cal["detail"]
    assert cal["fix"].startswith("jtop first: sudo systemctl enable --now jtop.service; then ")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
