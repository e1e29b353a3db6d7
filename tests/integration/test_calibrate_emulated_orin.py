"""`edge-agent calibrate` against jetson-stats' real service (JTOP_TESTING mode) on an emulated
Orin, as jetson-stats tests itself: modes are switched by id and never forced, a mode that needs
a reboot is marked unavailable without being requested, the GPU clock cap of each mode is read
from jetson-stats' own objects, and the original mode is back after a run that succeeds, one
that fails, and one ended by SIGTERM. Root only (mount namespace); see emulated_orin.py."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.calibration_fixtures import REPO, calibration_bundle
from tests.integration.emulated_orin import MODES, START_MODE, run_in_namespace


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """Runs emulated_orin.py in a private mount namespace once; its result.json."""
    out = tmp_path_factory.mktemp("orin")
    bundle = calibration_bundle(str(out))
    proc = run_in_namespace(os.path.join(REPO, "tests", "integration", "emulated_orin.py"),
                            [out, bundle])
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(str(out / "result.json")) as f:
        return json.load(f)


def test_jetson_stats_objects_are_the_real_ones(emulated):
    """The client's j.gpu is jetson-stats' GPU class (not a dict) with kHz clocks."""
    seen = emulated["observed"]
    assert seen["gpu_type"] == "GPU" and not seen["gpu_is_mapping"]
    assert seen["models"] == [m[1] for m in MODES] and seen["id"] == START_MODE
    assert seen["gpu"]["gpu"]["freq"]["max"] == [m[2] for m in MODES if m[0] == START_MODE][0] / 1000


def test_every_settable_mode_is_measured_with_its_gpu_cap(emulated):
    """Modes 0-2 measured, each entry's GPU cap is that mode's (kHz); mode 3 needs a reboot."""
    run = emulated["success"]
    assert run["rc"] == 0, run["stderr"]
    entries = emulated["profile"]["entries"]
    caps = {e["power_mode_id"]: e["clocks"].get("gpu_max_khz") for e in entries}
    assert caps == {m[0]: m[2] / 1000 for m in MODES if m[3] == "0"}
    unavailable = emulated["profile"].get("unavailable", [])
    assert [u["power_mode"] for u in unavailable] == ["7W"] and "reboot" in unavailable[0]["reason"]


def test_modes_are_switched_by_id_and_never_forced(emulated):
    """Every nvpmodel -m call names an id, gets nothing on stdin (YES would force a reboot),
    and mode 3 (other TPC mask) is never requested."""
    sets = [c for c in emulated["nvpmodel_calls"] if c.startswith("-m ")]
    assert sets, emulated["nvpmodel_calls"]
    for call in sets:
        args, stdin = call.split(" | stdin=")
        assert args.split()[1].isdigit() and stdin == "''", call
        assert args.split()[1] != "3", call


@pytest.mark.parametrize("run", ["success", "error", "sigterm"])
def test_original_mode_is_restored(emulated, run):
    """After success, an error mid-run (profile unwritable) and SIGTERM mid-run, the board is
    back in its original mode."""
    r = emulated[run]
    assert r["mode_after"] == START_MODE, r["stderr"]
    if run == "error":
        assert r["rc"] == 1 and r["stderr"].strip().splitlines()[-1].startswith(
            "edge-agent calibrate: error: "), r["stderr"]
    if run == "sigterm":
        assert r["switched"] and r["rc"] == 128 + 15, r["stderr"]
    if run == "error":
        assert r["switched"] and "cannot write" in r["stderr"], r["stderr"]


def test_an_unwritable_profile_path_is_refused_before_any_mode_switch(emulated):
    """A profile whose folder is a file is refused up front (exit 2, naming --profile): no
    mode is set (no `nvpmodel -m`; the jtop service may query the mode meanwhile), so no stage
    is measured for nothing."""
    r = emulated["refused"]
    sets = [c for c in r["nvpmodel_calls"] if c.startswith("-m ")]
    assert r["rc"] == 2 and not sets, (r["stderr"], r["nvpmodel_calls"])
    last = r["stderr"].strip().splitlines()[-1]
    assert last.startswith("edge-agent calibrate: error: --profile: ") and (
        "blocked is a file, not a directory" in last), r["stderr"]


def test_doctor_on_the_emulated_orin_names_what_keeps_the_gpu_unused(emulated):
    """On the emulated Orin (L4T 35) `doctor` fails with fixes: the CPU onnxruntime shadows
    NVIDIA's, numpy is too new for TensorRT 8.5; jtop is reachable with the power mode."""
    if not emulated["l4t_file"]:
        pytest.skip("no overlayfs here: the emulated board has no /etc/nv_tegra_release")
    doc = emulated["doctor"]
    assert doc["rc"] == 1, doc["stderr"]
    by_name = {c["name"]: c for c in doc["report"]["checks"]}
    assert by_name["board"]["detail"].startswith("x86_64") and "L4T 35.4.1" in by_name["board"]["detail"]
    assert by_name["onnxruntime"]["status"] == "FAIL" and "NVIDIA" in by_name["onnxruntime"]["fix"]
    assert by_name["jtop"]["status"] == "OK" and "power mode 15W (id 1)" in by_name["jtop"]["detail"]
    if tuple(int(p) for p in __import__("numpy").__version__.split(".")[:2]) >= (1, 24):
        assert by_name["numpy"]["status"] == "FAIL" and "numpy<1.24" in by_name["numpy"]["fix"]
