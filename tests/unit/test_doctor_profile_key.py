"""``doctor``'s calibration lines match a profile as the agent does: a worker's "node
calibration" line looks up each of its stages by the whole key ``lookup_capacity`` uses
(board, L4T release, mode, stage hash, backend, precision), is OK exactly when the agent finds
an entry for every stage, and otherwise names the key part that misses in the words ``run``
logs (``agent.node.profilekey.missing_part``; WARN: the engine is timed at start, with the
calibrate command). On a Jetson whose jtop is unreachable the mode is
unknown and the calibrate fix comes after jtop's; jtop's own fixes are runnable commands.
Real node configs, profiles written by ``update_profile`` and, for the Jetson, a root with an
L4T release file and the installed jetson-stats client with no service to reach."""

from __future__ import annotations

import os
import pwd
import types

import pytest

from agent.ops.doctor import FAIL, OK, WARN, Context, check_calibration, check_jtop
from agent.ops.doctor_calib import expected_engine
from agent.ops.doctor_node import check_node
from calibration import host
from calibration.profile import ProfileEntry, lookup_capacity, update_profile
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_doctor_node import _by_name, _node
from tests.unit.test_profile_power_mode_jetson import _l4t_root

MODE = "MAXN"


def _entry(stage, ident, **over):
    values = dict(board=ident.board, l4t=ident.l4t, power_mode=MODE, stage=stage.index,
                  stage_sha256=stage.sha256, backend="onnxruntime", precision="fp32",
                  flops=float(stage.flops), samples=10, service_time_median_s=0.001,
                  service_time_p90_s=0.0012, capacity_flops=float(stage.flops) / 0.001,
                  measured_at="2026-01-01T00:00:00Z", bundle="demo")
    values.update(over)
    return ProfileEntry(**values)


def _line(tmp_path, name, entries, **cfg):
    """The "node calibration" line of a stage-4 worker of the demo bundle whose profile holds
    ``entries`` (and the config)."""
    profile = str(tmp_path / ("%s.json" % name))
    update_profile(profile, entries)
    checks, config = check_node(_node(tmp_path, name, capacity_profile=profile, **cfg), mode=MODE)
    return _by_name(checks)["node calibration"], config, profile


CASES = {  # what differs from this worker's key -> the words the line names it by
    "match": ({}, None),
    "otherbundle": ({"stage_sha256": "b" * 64}, "stage 4's sha256 "),
    "otherrelease": ({"l4t": "36.3.0"}, "has no entry on this board (the profile holds L4T "
                                        "36.3.0"),
    "otherboard": ({"board": "NVIDIA Jetson Nano"}, "has no entry (the profile holds NVIDIA "
                                                    "Jetson Nano)"),
    "othermode": ({"power_mode": "15W"}, "mode MAXN is not calibrated on this board"),
    "tensorrt": ({"backend": "tensorrt"}, "with backend tensorrt, not onnxruntime"),
    "fp16": ({"precision": "fp16"}, "with precision fp16, not fp32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_calibration_is_ok_exactly_when_the_agent_finds_the_entry(tmp_path, case):
    """Rule: OK iff ``lookup_capacity`` (the agent's lookup) finds an entry for the stage; a
    profile of another bundle (every stage hash differs), release, board, mode, backend or
    precision is a WARN naming that part, whose fix is the calibrate command (it was "OK ...
    12 entries for this board, 4 in mode MAXN" while the agent timed its engine)."""
    ident = host.read_host_identity("/")
    stage = load_bundle(DEMO_BUNDLE_DIR).stage(4)
    over, says = CASES[case]
    line, cfg, profile = _line(tmp_path, "w" + case, [_entry(stage, ident, **over)])
    backend, precision = expected_engine(cfg)
    assert (backend, precision) == ("onnxruntime", "fp32") or pytest.skip("a GPU backend here")
    found = lookup_capacity(profile, stage, backend, precision, MODE, ident)
    assert (line.status == OK) == (found is not None), line
    if says is None:
        assert "stage(s) 4 found (mode MAXN, onnxruntime fp32, engine_threads 1)" in line.detail
    else:
        assert line.status == WARN and says in line.detail and "stage 4" in line.detail, line
        assert line.fix.startswith("run `edge-agent calibrate --bundle "), line.fix


def test_a_profile_of_another_release_says_so_in_the_device_line_too(tmp_path):
    """Rule: the device's calibration line (no --config) says "none for this L4T release"
    for entries of this board under another release, not "0 entries for this board"."""
    ident = host.read_host_identity("/")
    stage = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    update_profile(str(tmp_path / "calibration.json"), [_entry(stage, ident, l4t="36.3.0")])
    (line,) = check_calibration(Context(state_dir=str(tmp_path), mode_name=MODE))
    assert line.status == WARN and "none for this L4T release (%s)" % ident.l4t in line.detail


def test_the_device_line_checks_stage_hashes_of_the_bundle_given(tmp_path):
    """Rule: with --bundle, the device's line is a WARN when the profile's entries in this
    mode are of other stage files (another bundle), OK when they are this bundle's."""
    ident = host.read_host_identity("/")
    stages = load_bundle(DEMO_BUNDLE_DIR).stages
    update_profile(str(tmp_path / "calibration.json"),
                   [_entry(s, ident, stage_sha256="c" * 64) for s in stages])
    ctx = Context(state_dir=str(tmp_path), mode_name=MODE, bundle=DEMO_BUNDLE_DIR)
    (line,) = check_calibration(ctx)
    assert line.status == WARN and "none in mode MAXN for stage(s) 1,2,3,4" in line.detail
    update_profile(str(tmp_path / "calibration.json"), [_entry(s, ident) for s in stages])
    (line,) = check_calibration(ctx)
    assert line.status == OK, line


def _jtop_closed(message):
    class Error(Exception):
        pass

    class Client:
        def __init__(self, interval=0.5):
            raise Error(message)

    return types.SimpleNamespace(__version__="7.2.2", jtop=Client, JtopException=Error)


def test_jtop_fixes_are_runnable_commands(tmp_path):
    """Rule: a user the service refuses gets `sudo usermod -aG jtop USER` and the agent's
    restart (it was "the user needs group jtop"); a stopped service gets the systemctl line."""
    root = _l4t_root(tmp_path)
    refused = check_jtop(Context(root=root, jtop_module=_jtop_closed(
        "I can't access jtop.service.\nPlease logout or reboot this board.")))
    try:  # as root the fix names the service user, else the user running doctor
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid the user database lacks is named by its number
        me = str(os.geteuid())
    user = "edge-agent" if os.geteuid() == 0 else me
    assert refused.status == FAIL
    assert refused.fix.startswith("sudo usermod -aG jtop %s, then restart the agent (sudo "
                                  "systemctl restart edge-agent.target" % user), refused.fix
    stopped = check_jtop(Context(root=root, jtop_module=_jtop_closed(
        "The jtop.service is not active. Please run:\nsudo jtop --install-service")))
    assert stopped.fix == "sudo systemctl enable --now jtop.service"


def test_with_jtop_failing_the_device_calibration_fix_is_jtop_first(tmp_path):
    """Rule: on a Jetson whose jtop line FAILs, the calibration line says the mode is unknown
    (no CPU-path name) and its calibrate fix comes after jtop's fix: calibrate, run before it,
    refuses there."""
    root = _l4t_root(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    update_profile(str(state / "calibration.json"), [_entry(
        load_bundle(DEMO_BUNDLE_DIR).stage(1), host.read_host_identity(root),
        power_mode=host.read_cpu_mode_name(root))])
    ctx = Context(root=root, state_dir=str(state), jtop_module=_jtop_closed(
        "The jtop.service is not active. Please run:\nsudo jtop --install-service"))
    assert check_jtop(ctx).status == FAIL
    (line,) = check_calibration(ctx)
    assert line.status == WARN and "the power mode is unknown" in line.detail
    assert line.fix.startswith("jtop first: sudo systemctl enable --now jtop.service; then "
                               "edge-agent calibrate --bundle DIR"), line.fix


def test_node_calibration_on_a_jetson_without_jtop(tmp_path):
    """Rule: a worker on a Jetson (L4T root) whose jtop service is not reachable (the real
    jetson-stats client, no service here): without power_mode the line is a WARN that the mode
    is unknown and the engine is timed, fix jtop first or power_mode; with power_mode the
    profile is matched under that mode, and its calibrate fix still needs jtop first."""
    pytest.importorskip("jtop", reason="jetson-stats is not installed")
    if os.path.exists("/run/jtop.sock"):
        pytest.skip("a jtop service runs here")
    root = _l4t_root(tmp_path)
    ident = host.read_host_identity(root)
    stage = load_bundle(DEMO_BUNDLE_DIR).stage(4)
    profile = str(tmp_path / "p.json")
    update_profile(profile, [_entry(stage, ident)])
    checks, _ = check_node(_node(tmp_path, "w1", capacity_profile=profile), root=root)
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN and "the power mode is unknown on this Jetson" in line.detail
    assert "jtop service not reachable" in line.detail
    assert line.fix.startswith("jtop first: sudo systemctl enable --now jtop.service")
    assert line.fix.endswith('or set power_mode = "NAME" in the config'), line.fix
    checks, _ = check_node(_node(tmp_path, "w2", capacity_profile=profile, power_mode=MODE),
                           root=root)
    line = _by_name(checks)["node calibration"]
    assert line.status == OK and "mode MAXN" in line.detail, line
    checks, _ = check_node(_node(tmp_path, "w3", capacity_profile=profile, power_mode="15W"),
                           root=root)
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN and "mode 15W is not calibrated" in line.detail
    assert line.fix.startswith("jtop first: ") and "edge-agent calibrate" in line.fix


@pytest.mark.parametrize("accelerator, backend, precision", [
    ("none", "auto", "fp16"), ("preferred", "onnxruntime", "fp16"), ("preferred", "auto", "fp32")])
def test_expected_engine_is_what_the_loaded_engine_reports(accelerator, backend, precision):
    """Rule: the (backend, precision) doctor looks up is the one the worker's engine reports
    (and ``worker_capacity`` asks the profile for): fp16 without the TensorRT provider runs,
    and was calibrated, as fp32. The engine is loaded for real here."""
    from engines.loader import load_engine

    cfg = types.SimpleNamespace(accelerator=accelerator, backend=backend, precision=precision)
    with load_engine(load_bundle(DEMO_BUNDLE_DIR).stage(1), backend=backend,
                     precision=precision, accelerator=accelerator) as engine:
        got = ("tensorrt" if "tensorrt" in str(engine.info.get("backend", "")).lower()
               else "onnxruntime", str(engine.info.get("precision")))
    assert expected_engine(cfg) == got
