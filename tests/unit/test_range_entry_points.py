"""Every way a capacity or link rate enters takes the wire's range (``RATE_RANGE``, >= 1) and a
stage a worker would take over a day on is refused, naming the field or option: a hand-written
node config (``run`` exits 78, ``doctor --config`` FAILs), ``scenario``'s options, a
calibration profile, a peer's ``link_rate_bytes_s``, ``fleet render --emulate``; and a JSON or
TOML number no float holds (``1e-400``, ``1e400``) is refused where it is written instead of
being read as 0.0 or inf. Real files, real commands, the agent as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from agent.cli import main
from agent.config.checks import MAX_INTERVAL_S, RATE_RANGE
from agent.config.jsonfile import loads
from agent.config.node import ConfigError, load_config, parse_config
from agent.errors import EXIT_CONFIG
from agent.ops.doctor import FAIL
from agent.ops.doctor_node import check_node
from calibration import host
from calibration.profile import (ProfileEntry, ProfileError, load_profile, lookup_capacity,
                                 profile_to_obj, Profile)
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPOLOGY = os.path.join(REPO, "agent", "testbed", "topologies", "default.json")
SLOW = 2.0  # FLOP/s: in RATE_RANGE, yet the demo bundle's stage 4 takes days at it


def _worker_toml(tmp_path, emulate=SLOW, link_rate="", stage=4):
    """A worker node config of the demo bundle, as a person writes it, in tmp_path."""
    text = ('node_id = "w4"\nrole = "worker"\nstage = %d\nbundle = "%s"\nstate_dir = "%s"\n'
            'security = "none"\ncontrol_bind = "tcp://127.0.0.1:7101"\n'
            'data_bind = "tcp://127.0.0.1:7102"\nwarmup_runs = 1\ntiming_runs = 1\n'
            'emulate_capacity_flops = %s\n\n[[peers]]\nid = "s1"\nstage = 0\n'
            'control_address = "tcp://127.0.0.1:7103"\ndata_address = "tcp://127.0.0.1:7104"\n'
            % (stage, DEMO_BUNDLE_DIR, tmp_path / "state", emulate))
    if link_rate:
        text += "link_rate_bytes_s = %s\n" % link_rate
    path = tmp_path / "w4.toml"
    path.write_text(text)
    return str(path)


def test_the_slow_demo_setting_is_over_a_day_yet_in_the_wire_range():
    """The setting the rules below use: SLOW is a capacity the range check alone accepts."""
    flops = load_bundle(DEMO_BUNDLE_DIR).stage(4).flops
    assert RATE_RANGE[0] <= SLOW and flops / SLOW > MAX_INTERVAL_S


def test_run_exits_78_on_a_node_config_whose_emulated_capacity_takes_over_a_day(tmp_path):
    """Rule: `run` of a hand-written worker config whose emulate_capacity_flops does a stage
    it holds in over a day exits 78 (no restart) with one line naming the field, the stage
    and the least capacity that passes, before binding anything."""
    path = _worker_toml(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "emulate_capacity_flops: stage 4:" in lines[0] and "give at least" in lines[0]


def test_doctor_config_fails_on_the_same_config_and_passes_a_fast_enough_one(tmp_path):
    """Rule: `doctor --config` (its node steps) FAILs the config `run` refuses, naming
    emulate_capacity_flops, with a fix that says to raise it; the same config at the least
    capacity the line gives passes."""
    checks, _ = check_node(_worker_toml(tmp_path))
    failed = [c for c in checks if c.status == FAIL]
    assert len(failed) == 1 and "emulate_capacity_flops: stage 4:" in failed[0].detail, checks
    assert failed[0].fix.startswith("raise emulate_capacity_flops"), failed[0].fix
    need = float(failed[0].detail.rsplit("give at least ", 1)[1].split()[0])
    checks, _ = check_node(_worker_toml(tmp_path, emulate=need))
    assert not [c for c in checks if "emulate_capacity_flops" in c.detail and c.status == FAIL]


@pytest.mark.parametrize("rate, ok", [("0.0", True), ("1.0", True), ("12500000.0", True),
                                      ("0.5", False), ("1e-300", False), ("1e25", False),
                                      ("-1.0", False)])
def test_a_peers_link_rate_is_0_unknown_or_in_the_wire_range(tmp_path, rate, ok):
    """Rule: peers[].link_rate_bytes_s is 0 (unknown) or in RATE_RANGE, else the node config
    is refused naming the peer's field and both the accepted values."""
    path = _worker_toml(tmp_path, emulate=0, link_rate=rate)
    if ok:
        assert load_config(path).peers[0].link_rate_bytes_s == float(rate)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert ("config.peers[0].link_rate_bytes_s: must be 0 (unknown) or in [1, 1e+24], got "
            in str(info.value)), info.value


def _scenario(tmp_path, monkeypatch, capsys, *opts):
    monkeypatch.chdir(tmp_path)
    rc = main(["scenario", "mdi-2-node", "--samples", "10", "-o", "s.json"] + list(opts))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("option, value, says", [
    ("--node-capacity", "0.5", "--node-capacity: must be in [1, 1e+24]"),
    ("--link-rate", "0.5", "--link-rate: must be in [1, 1e+24]"),
    ("--node-capacity", "2", "--node-capacity: stage 1: "),
])
def test_scenario_names_its_option_for_a_capacity_or_link_rate_out_of_range(
        tmp_path, monkeypatch, capsys, option, value, says):
    """Rule: `scenario`'s --node-capacity and --link-rate take the wire's range, and a node
    capacity at which a stage takes over a day is refused; the line names the option (not the
    file's workers[0].capacity) and nothing is written."""
    rc, err = _scenario(tmp_path, monkeypatch, capsys, option, value)
    assert rc == 2 and says in err and "workers[" not in err, err
    assert not os.path.exists(tmp_path / "s.json")


def _profile_entry(**over):
    values = dict(board="b", l4t="35.3.1", power_mode="MAXN", stage=1, stage_sha256="a" * 64,
                  backend="onnxruntime", precision="fp32", flops=2.0e6, samples=10,
                  service_time_median_s=0.001, service_time_p90_s=0.001, capacity_flops=2.0e9,
                  measured_at="t")
    values.update(over)
    return ProfileEntry(**values)


def _write_profile(tmp_path, *entries, text_edit=None):
    text = json.dumps(profile_to_obj(Profile(entries=entries)))
    if text_edit:
        text = text.replace(*text_edit)
    path = tmp_path / "calibration.json"
    path.write_text(text)
    return str(path)


def test_a_profile_capacity_below_1_is_refused_when_read_naming_file_and_entry(tmp_path):
    """Rule: a calibration profile entry's capacity_flops is in RATE_RANGE: 0.5 FLOP/s is
    refused when the file is read, naming the file and the entry."""
    path = _write_profile(tmp_path, _profile_entry(), _profile_entry(stage=2, capacity_flops=0.5))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value).startswith(path + ": entries[1].capacity_flops: must be in [1, ")


def test_a_profile_mu_below_1_at_lookup_is_refused(tmp_path):
    """Rule: the mu a lookup gives (the stage's FLOP now / the median time measured) is in
    RATE_RANGE too: a stage of 1,000 FLOP timed at 2,000 s is a mu of 0.5, refused naming the
    file, the stage and the mode, never handed to the agent's reports."""
    entry = _profile_entry(flops=1000.0, service_time_median_s=2000.0,
                           service_time_p90_s=2000.0, capacity_flops=1.0)
    path = _write_profile(tmp_path, entry)
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=1000.0)
    with pytest.raises(ProfileError) as info:
        lookup_capacity(path, stage, "onnxruntime", "fp32", "MAXN",
                        host_identity=host.HostIdentity(board="b", l4t="35.3.1"))
    assert str(info.value).startswith(path + ": stage 1 in MAXN: ") and "[1, " in str(info.value)


def _render(tmp_path, topology, *extra):
    t = json.loads(open(topology).read())
    nodes = [s["id"] for s in t["sources"]] + [w["id"] for w in t["workers"]]
    inv = tmp_path / "hosts.txt"
    inv.write_text("".join("%s 10.0.0.%d\n" % (n, 10 + i) for i, n in enumerate(nodes)))
    return main(["fleet", "render", "--topology", topology, "--inventory", str(inv),
                 "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")] + list(extra))


def test_fleet_render_emulate_refuses_an_emulated_capacity_over_a_day(tmp_path, capsys):
    """Rule: `fleet render --emulate` writes the topology's emulated capacities into the
    devices' configs, so it checks them against the bundle's stages as the testbed does: a
    worker whose stage takes over a day is refused naming its field, and nothing is
    written; without --emulate no capacity is written and the render goes ahead."""
    t = json.loads(open(TOPOLOGY).read())
    i = next(i for i, w in enumerate(t["workers"]) if w["stage"] == 4)
    t["workers"][i]["emulate_capacity_flops"] = SLOW
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps(t))
    assert _render(tmp_path, str(topology), "--emulate") == 2
    err = capsys.readouterr().err
    assert "workers[%d].emulate_capacity_flops: stage 4: " % i in err, err
    assert not os.path.exists(tmp_path / "out")
    assert _render(tmp_path, str(topology)) == 0
    assert os.path.isdir(tmp_path / "out" / "devices")


@pytest.mark.parametrize("number, says", [
    ("1e-400", "1e-400 is below the smallest float"),
    ("-1e-400", "-1e-400 is above the largest negative float"),
    ("1e400", "1e400 is above the largest float"),
    ("-1e400", "-1e400 is below the lowest float"),
])
def test_a_json_number_no_float_holds_is_refused_where_it_is(number, says):
    """Rule: a JSON number that would read as 0.0 or inf is refused with one line naming where
    it is (it was read silently and then reported as "got 0.0")."""
    with pytest.raises(ValueError) as info:
        loads('{"links": [{"rate": 1.0}, {"rate": %s}]}' % number)
    assert str(info.value).startswith("links[1].rate: " + says), info.value


def test_json_zeros_and_subnormals_are_read_as_written():
    """Rule: only a number float cannot hold is refused: 0, 0.0e-999 and a subnormal read."""
    assert loads('[0, 0.0, -0.0e-999, 1e-310, 2.5]') == [0, 0.0, 0.0, 1e-310, 2.5]


def test_a_topology_and_a_profile_with_1e_minus_400_name_the_file_and_field(tmp_path):
    """Rule: the files read with the JSON reader say the file and field: a topology's
    emulate_capacity_flops of 1e-400 and a profile's capacity_flops of 1e400."""
    from agent.testbed.topology import TopologyError, load_topology

    text = open(TOPOLOGY).read().replace('"emulate_capacity_flops": 1.9e6',
                                         '"emulate_capacity_flops": 1e-400', 1)
    topology = tmp_path / "topology.json"
    topology.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(str(topology))
    assert ("workers[0].emulate_capacity_flops: 1e-400 is below the smallest float"
            in str(info.value)), info.value
    path = _write_profile(tmp_path, _profile_entry(),
                          text_edit=('"capacity_flops": 2000000000.0', '"capacity_flops": 1e400'))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value).startswith(
        path + ": entries[0].capacity_flops: 1e400 is above the largest float"), info.value


def test_a_toml_number_no_float_holds_is_refused_naming_the_field(tmp_path):
    """Rule: a node config's TOML number that would read as 0.0 or inf is refused naming the
    file and the field; TOML's own inf stays the field's "must be a finite number"."""
    path = _worker_toml(tmp_path, emulate=0, link_rate="1e-400")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == ("%s: config.peers[0].link_rate_bytes_s: 1e-400 is below the "
                               "smallest float (5e-324)" % path)
    path = _worker_toml(tmp_path, emulate="1e400")
    with pytest.raises(ConfigError, match="config.emulate_capacity_flops: 1e400 is above"):
        load_config(path)
    path = _worker_toml(tmp_path, emulate="inf")
    with pytest.raises(ConfigError, match="emulate_capacity_flops: must be a finite number"):
        load_config(path)


def test_parse_config_of_a_peer_rate_below_1_names_the_peer():
    """Rule: a node config built in code (the testbed's, a render's) gets the same peer rule."""
    obj = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": "/tmp/x", "control_bind": "tcp://127.0.0.1:7001",
           "data_bind": "tcp://127.0.0.1:7002",
           "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:7003",
                      "data_address": "tcp://127.0.0.1:7004", "link_rate_bytes_s": 1e-3}]}
    with pytest.raises(ConfigError, match=r"config\.peers\[0\]\.link_rate_bytes_s: must be 0"):
        parse_config(obj)
