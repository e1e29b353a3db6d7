"""`edge-agent doctor --config NODE.toml` and calibration: a worker's calibration line is the
profile its config's ``capacity_profile`` names (not one in its state_dir), reported once, with
what ``run`` does about it and the real ``calibrate`` command that makes it; each "node files"
fault gets the fix of that fault; a profile under the service's /var/lib/edge-agent is made
as the service user; a source's ipc:// client endpoint outside the unit's runtime directory is
a WARN. Real configs, profiles (made by ``calibrate``) and files in tmp_path."""

from __future__ import annotations

import os
import shlex

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.node import build, workerstart
from agent.ops.doctor import FAIL, OK, WARN, Context, check_calibration
from agent.ops.doctor_node import as_service_user, check_node
from engines.demo import DEMO_BUNDLE_DIR

QUICK = ["--seconds", "0.05", "--warmup", "0.02"]  # a calibration of a second or so
SERVICE_USER = "sudo -u edge-agent /opt/edge-agent/venv/bin/"  # the service's profile's command


def _node(tmp_path, name, role="worker", **over):
    """A node config of the demo bundle (a stage-4 worker, or a source) written to tmp_path."""
    cfg = {"node_id": name, "role": role, "stage": 4 if role == "worker" else 0,
           "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path / "var" / name),
           "security": "none", "control_bind": "tcp://127.0.0.1:7001",
           "data_bind": "tcp://127.0.0.1:7002", "warmup_runs": 1, "timing_runs": 1}
    cfg.update(over)
    peer = ("s1", 0) if role == "worker" else ("w1", 1)
    text = "".join("%s = %s\n" % (k, v if isinstance(v, int) else '"%s"' % v)
                   for k, v in cfg.items())
    text += ('\n[[peers]]\nid = "%s"\nstage = %d\ncontrol_address = "tcp://127.0.0.1:7003"\n'
             'data_address = "tcp://127.0.0.1:7004"\n' % peer)
    path = tmp_path / ("%s.toml" % name)
    path.write_text(text)
    return str(path)


def _by_name(checks):
    return {c.name: c for c in checks}


def _calibrate(command):
    """Run a ``calibrate`` command line as doctor printed it (shortened timings; here as this
    user, without the service user's ``sudo -u`` prefix)."""
    if command.startswith(SERVICE_USER):
        command = command[len(SERVICE_USER):]
    argv = shlex.split(command)
    assert argv[:2] == ["edge-agent", "calibrate"], command
    assert main(argv[1:] + QUICK) == 0


def test_a_missing_profile_the_config_names_is_one_fail_whose_calibrate_command_makes_it(
        tmp_path):
    """A worker config naming a capacity_profile that is not there: "node files" is OK (the
    state_dir is fine), the profile is one FAIL line ("node calibration") with the agent's own
    line (``run`` exits 78 on it) and the fix "run `edge-agent calibrate ...` first"; the later
    steps are still checked, the device-level calibration line is left out with configs, and
    the command in the fix, run, makes the very file the config names."""
    profile = str(tmp_path / "var" / "calibration.json")
    path = _node(tmp_path, "w1a", capacity_profile=profile)
    checks, cfg = check_node(path)
    got = _by_name(checks)
    assert [c.name for c in checks] == ["node config", "node files", "node calibration",
                                        "node bundle", "node limits", "node keys",
                                        "node policy", "node accelerator"]
    assert got["node files"].status == OK and "capacity_profile" not in got["node files"].detail
    line = got["node calibration"]
    with pytest.raises(UsageError) as agent_says:  # what `run` prints before exiting 78
        build.preflight(cfg)
    said, hint = str(agent_says.value).split("; calibrate this device first ")
    assert line.status == FAIL and " ".join(said.split()) in line.detail
    assert hint.startswith("(`edge-agent doctor --config CONFIG` prints the command)")
    assert "exits 78" in line.detail
    assert line.fix.startswith("run `edge-agent calibrate --bundle ") and line.fix.endswith("first")
    assert "--state-dir %s " % (tmp_path / "var") in line.fix
    assert [c for c in checks if profile in c.detail] == [line]  # reported once
    assert all(c.status == OK for c in checks if c is not line)
    assert check_calibration(Context(state_dir=cfg.state_dir, configs=[cfg])) == []
    _calibrate(line.fix.split("`")[1])
    assert os.path.isfile(profile)
    again = _by_name(check_node(path)[0])["node calibration"]
    assert again.status == OK and again.detail.startswith(profile + ": "), again


def test_doctor_reads_the_profile_the_config_names_not_one_in_its_state_dir(tmp_path):
    """After ``calibrate --state-dir VAR`` (the deploy walkthrough's), a node whose state_dir
    is VAR/w1a and whose capacity_profile is VAR/calibration.json gets an OK calibration line
    naming VAR/calibration.json; nothing reports VAR/w1a/calibration.json missing."""
    var = tmp_path / "var"
    assert main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", str(var)] + QUICK) == 0
    path = _node(tmp_path, "w1a", capacity_profile=str(var / "calibration.json"))
    checks, cfg = check_node(path)
    line = _by_name(checks)["node calibration"]
    assert line.status == OK and line.detail.startswith(str(var / "calibration.json") + ": ")
    assert "entries for this board" in line.detail
    assert not any("w1a/calibration.json" in c.detail for c in checks)
    assert check_calibration(Context(state_dir=cfg.state_dir, configs=[cfg])) == []


def test_a_worker_naming_no_profile_warns_that_run_times_its_engine(tmp_path):
    """A worker config without capacity_profile: WARN that ``run`` times its engine at start
    (what ``worker_capacity`` does), with the calibrate command and the line to add; the
    profile is the service's (/var/lib/edge-agent), so the command runs as the service user
    with the venv's script (edge-agent is on no PATH under sudo)."""
    checks, _ = check_node(_node(tmp_path, "w1a"))
    line = _by_name(checks)["node calibration"]
    assert line.status == WARN and "times the engine" in line.detail
    assert line.fix.startswith(SERVICE_USER + "edge-agent calibrate --bundle %s --state-dir "
                               "/var/lib/edge-agent " % DEMO_BUNDLE_DIR)
    assert 'capacity_profile = "/var/lib/edge-agent/calibration.json"' in line.fix


def test_an_unreadable_profile_the_config_names_fails_with_recalibrate_as_the_fix(tmp_path):
    """A profile that is not one (``run`` raises ProfileError, exit 78): FAIL, "move it away,
    then run `edge-agent calibrate ...`"."""
    profile = tmp_path / "calibration.json"
    profile.write_text("not json\n")
    checks, _ = check_node(_node(tmp_path, "w1a", capacity_profile=str(profile)))
    line = _by_name(checks)["node calibration"]
    assert line.status == FAIL and "unreadable" in line.detail
    assert line.fix.startswith("move it away, then run `edge-agent calibrate --bundle ")


def test_each_node_files_fault_gets_the_fix_of_that_fault(tmp_path):
    """"node files" fixes fit the fault: a state_dir that cannot be made is made writable, a
    FIFO where the agent writes a file is moved away, a missing replay set is given or left
    out; only the state_dir fault is told to make state_dir writable."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fixes = {}
    checks, _ = check_node(_node(tmp_path, "w1", state_dir=str(blocker / "state")))
    fixes["state_dir"] = _by_name(checks)["node files"]
    fifo_dir = tmp_path / "var" / "w2"
    fifo_dir.mkdir(parents=True)
    os.mkfifo(str(fifo_dir / "state.json"))
    fixes["fifo"] = _by_name(check_node(_node(tmp_path, "w2"))[0])["node files"]
    missing = str(tmp_path / "no-replay.npz")
    fixes["replay"] = _by_name(check_node(_node(tmp_path, "s1", role="source",
                                                replay_path=missing))[0])["node files"]
    assert all(c.status == FAIL for c in fixes.values()), fixes
    assert fixes["state_dir"].fix.startswith("make state_dir (%s) a directory the service user "
                                             "can write" % (blocker / "state"))
    assert fixes["fifo"].fix == "the agent needs a regular file there: move it away"
    assert "replay_path" in fixes["replay"].fix and missing in fixes["replay"].detail
    assert not any("state_dir" in fixes[k].fix for k in ("fifo", "replay")), fixes


def test_doctor_leaves_a_missing_state_dir_unmade_and_says_run_makes_it(tmp_path):
    """Rule: doctor changes nothing: a state_dir that is not there yet is not created (it
    was, and a doctor run as root left root-owned folders); "node files" is OK and says where
    run will make it; ``run``'s own preflight still makes it."""
    state = tmp_path / "var" / "lib" / "w1"
    checks, cfg = check_node(_node(tmp_path, "w1", state_dir=str(state)))
    line = _by_name(checks)["node files"]
    assert line.status == OK and "not there yet: run makes it (%s takes" % tmp_path in line.detail
    assert sorted(os.listdir(str(tmp_path))) == ["w1.toml"]  # nothing made, no probe left
    build.preflight(cfg)
    assert state.is_dir()


def test_the_device_calibration_line_names_a_calibrate_command_that_runs(tmp_path):
    """Without --config the calibration line is STATE_DIR/calibration.json; missing, or
    without an entry for the mode, its fix is a calibrate command with --bundle (which
    calibrate requires) and that --state-dir."""
    state = tmp_path / "state"
    state.mkdir()
    (line,) = check_calibration(Context(state_dir=str(state)))
    assert line.status == WARN and str(state / "calibration.json") in line.detail
    assert line.fix.startswith("edge-agent calibrate --bundle DIR --state-dir %s" % state)
    assert main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", str(state)] + QUICK) == 0
    (line,) = check_calibration(Context(state_dir=str(state), mode_name="no-such-mode"))
    assert line.status == WARN and "none for mode no-such-mode" in line.detail
    assert line.fix == "edge-agent calibrate --bundle DIR --state-dir %s --modes current" % state
    # given a bundle, the fix names it rather than DIR
    (line,) = check_calibration(Context(state_dir=str(state), mode_name="no-such-mode",
                                        bundle=DEMO_BUNDLE_DIR))
    assert line.fix == "edge-agent calibrate --bundle %s --state-dir %s --modes current" % (
        DEMO_BUNDLE_DIR, state)


def _gpu_backend_here() -> bool:
    import onnxruntime as ort

    from engines.loader import tensorrt_available
    from engines.ort_backend import choose_providers

    return tensorrt_available() or choose_providers(ort.get_available_providers())[0] != [
        "CPUExecutionProvider"]


def test_accelerator_required_without_a_gpu_backend_fails_with_the_line_run_exits_78_on(
        tmp_path):
    """Rule: ``doctor --config`` finds what makes ``run`` exit 78, the accelerator included: a
    worker with accelerator = "required" on a machine whose onnxruntime has no GPU provider
    (and no TensorRT) is a FAIL carrying the agent's own start-up line (it was all OK, and
    ``run`` then sent the user back to doctor); "preferred" and "none" are OK lines. Nothing is
    loaded for the check: the real engines are loaded here only to read the agent's line."""
    if _gpu_backend_here():
        pytest.skip("this machine has a GPU backend (TensorRT or a GPU provider): the stage "
                    "would not run on the CPU")
    from engines.accelerator import AcceleratorUnavailable
    from engines.bundle import load_bundle

    checks, cfg = check_node(_node(tmp_path, "w1a", accelerator="required"))
    line = _by_name(checks)["node accelerator"]
    with pytest.raises(AcceleratorUnavailable) as agent_says:
        workerstart.load_engines(cfg, load_bundle(cfg.bundle))
    assert line.status == FAIL and line.detail == " ".join(str(agent_says.value).split())
    assert 'accelerator = "preferred"' in line.fix
    for mode, says in (("preferred", "runs on the CPU, with a WARNING"),
                       ("none", "the CPU on purpose")):
        checks, _ = check_node(_node(tmp_path, "w1" + mode[0], accelerator=mode))
        got = _by_name(checks)["node accelerator"]
        assert got.status == OK and says in got.detail, got


def test_a_source_has_no_accelerator_line(tmp_path):
    """A source loads no engine, so ``doctor --config`` has no accelerator line for it."""
    checks, _ = check_node(_node(tmp_path, "s1", role="source", accelerator="required"))
    assert "node accelerator" not in _by_name(checks)


def test_a_calibrate_command_runs_as_the_service_user_only_for_the_services_profile():
    """Run as root, calibrate leaves a profile of root's, mode 0600, that the agent cannot
    read: a profile under /var/lib/edge-agent is made with ``sudo -u edge-agent`` and the venv's
    script; any other path keeps the plain command (which ``_calibrate`` runs here)."""
    cmd = "edge-agent calibrate --bundle B --state-dir X"
    assert as_service_user(cmd, "/var/lib/edge-agent/calibration.json") == SERVICE_USER + cmd
    assert as_service_user(cmd, "/var/lib/edge-agent/w1/cal.json") == SERVICE_USER + cmd
    for other in ("/var/lib/edge-agent-old/calibration.json", "/tmp/calibration.json",
                  "profile.json"):
        assert as_service_user(cmd, other) == cmd, other
    (line,) = check_calibration(Context(state_dir="/var/lib/edge-agent"))
    assert line.fix.startswith(SERVICE_USER + "edge-agent calibrate --bundle DIR --state-dir "
                               "/var/lib/edge-agent")


@pytest.mark.parametrize("endpoint, status, says", [
    ("ipc:///tmp/cam.sock", WARN, "PrivateTmp=yes"),
    ("ipc:///var/tmp/cam.sock", WARN, "PrivateTmp=yes"),
    ("ipc:///srv/cam.sock", WARN, "ProtectSystem=strict"),
    ("ipc:///run/edge-agent/cam/client.sock", OK, "group edge-agent"),
    ("ipc:///run/edge-agent/other/client.sock", WARN, "ProtectSystem=strict"),
])
def test_a_sources_ipc_client_endpoint_is_checked_against_the_units_runtime_directory(
        tmp_path, endpoint, status, says):
    """Under edge-agent@cam.service (config cam.toml) only /run/edge-agent/cam/ (the unit's
    RuntimeDirectory) holds a client socket a camera program on the device can reach: /tmp is
    private to the unit, elsewhere is read-only or closed; outside it the line is a WARN whose
    fix names that path and the group."""
    path = _node(tmp_path, "cam", role="source", arrival="client", client_bind=endpoint)
    checks, cfg = check_node(path)
    assert cfg is not None and cfg.client_bind == endpoint
    line = _by_name(checks)["node client endpoint"]
    assert [c.name for c in checks][:2] == ["node config", "node client endpoint"]
    assert line.status == status and says in line.detail, line
    if status == WARN:
        assert 'client_bind = "ipc:///run/edge-agent/cam/client.sock"' in line.fix
        assert "usermod -aG edge-agent" in line.fix


def test_a_source_on_tcp_has_no_client_endpoint_line(tmp_path):
    """A loopback tcp client endpoint is reachable under the unit: no endpoint line."""
    path = _node(tmp_path, "cam", role="source", arrival="client",
                 client_bind="tcp://127.0.0.1:7010")
    assert "node client endpoint" not in _by_name(check_node(path)[0])
