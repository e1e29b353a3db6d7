"""`fleet render`: a topology and an inventory make every device's config, keys and sheet;
keys survive a re-render; a bad inventory is one line naming the entry; the client endpoint
is CURVE-served or local."""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.config.node import ConfigError, load_config, parse_config
from agent.fleet.inventory import InventoryError, parse_inventory
from agent.net.security import load_public_key, security_from_config

NODES = ["cam1", "cam2", "w1a", "w1b", "w2a", "w2b", "w3a", "w3b", "w4a", "w4b"]


def _inventory(tmp_path, extra=""):
    lines = ["# node host", "cam1 10.0.0.10", "cam2 10.0.0.10 control=5553 data=5554 "
             "client=5561 metrics=9465"]
    lines += ["%s 10.0.0.%d user=jetson" % (n, 11 + i) for i, n in enumerate(NODES[2:])]
    path = tmp_path / "hosts.txt"
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


def _render(tmp_path, *extra):
    return main(["fleet", "render", "--topology", "default", "--inventory",
                 _inventory(tmp_path), "--out", str(tmp_path / "out"),
                 "--root", str(tmp_path / "root")] + list(extra))


def test_render_writes_a_loadable_curve_config_per_device_and_keeps_keys(tmp_path, capsys):
    """Every node gets a TOML that loads, runs CURVE with its own keys and the fleet's
    allow-list, names its peers at their inventory addresses with their public keys; sources
    serve clients over CURVE; rendering again keeps every key."""
    assert _render(tmp_path) == 0
    assert "keys: 11 made, 0 kept" in capsys.readouterr().out
    out = tmp_path / "out"
    root = str(tmp_path / "root")
    secrets = {}
    for n in NODES:
        etc = out / "devices" / n / "etc" / "edge-agent"
        cfg = load_config(str(etc / (n + ".toml")))
        assert cfg.security == "curve" and cfg.secret_key_path.startswith(root)
        assert cfg.allowed_keys_dir == os.path.join(root, "etc/edge-agent/fleet")
        assert not cfg.emulate_capacity_flops and not cfg.emulate_links
        for p in cfg.peers:
            assert p.public_key == load_public_key(str(out / "keys" / (p.id + ".key"))).decode()
        assert sorted(os.listdir(etc / "fleet")) == sorted(n + ".key" for n in NODES)
        assert oct(os.stat(etc / "keys" / (n + ".key_secret")).st_mode & 0o777) == "0o600"
        secrets[n] = (etc / "keys" / (n + ".key_secret")).read_text()
        if cfg.role == "source":
            assert cfg.arrival == "client"
            assert cfg.client_keys_dir.endswith("etc/edge-agent/clients")
            assert os.listdir(etc / "clients") == ["workstation.key"]
        else:
            assert (etc / "calibrate.env").exists()
        sheet = (out / "devices" / n / "SHEET.txt").read_text()
        assert "sudo systemctl start edge-agent@%s" % n in sheet
        # the device paths under --root, as in the configs
        node_check = sheet.index("edge-agent doctor --config %s/etc/edge-agent/%s.toml"
                                 % (root, n))
        assert sheet.splitlines()[0] == ("%s: source" % n if cfg.role == "source"
                                         else "%s: worker, stage %d" % (n, cfg.stage))
        if cfg.role == "worker":  # the node's check reads the profile: calibrate comes first
            assert sheet.index("edge-agent-calibrate") < node_check
    cam1 = load_config(str(out / "devices/cam1/etc/edge-agent/cam1.toml"))
    assert cam1.peer("w1a").data_address == "tcp://10.0.0.11:5552"
    cam2 = load_config(str(out / "devices/cam2/etc/edge-agent/cam2.toml"))
    assert cam2.client_bind == "tcp://*:5561"
    man = json.loads((out / "fleet.json").read_text())
    assert man["nodes"]["w1a"]["metrics"] == "http://10.0.0.11:9464/metrics"
    drive = json.loads((out / "testbed.json").read_text())
    assert drive["fleet"]["clients"] == {"cam1": "tcp://10.0.0.10:5560",
                                         "cam2": "tcp://10.0.0.10:5561"}
    assert _render(tmp_path, "--emulate") == 0
    assert "keys: 0 made, 11 kept" in capsys.readouterr().out
    for n in NODES:
        etc = out / "devices" / n / "etc" / "edge-agent"
        assert (etc / "keys" / (n + ".key_secret")).read_text() == secrets[n]
    w1a = load_config(str(out / "devices/w1a/etc/edge-agent/w1a.toml"))
    assert w1a.emulate_capacity_flops > 0 and w1a.emulate_links


def test_rendered_keys_make_a_working_security_object(tmp_path):
    """The keys a render writes pass the agent's own checks (permissions, public matches
    secret, allow-list folder)."""
    assert _render(tmp_path) == 0
    out = tmp_path / "out"
    cfg = load_config(str(out / "devices/w1a/etc/edge-agent/w1a.toml"))
    etc = str(out / "devices/w1a/etc/edge-agent")
    cfg = parse_config(dict(_as_obj(cfg), secret_key_path=etc + "/keys/w1a.key_secret",
                            public_key_path=etc + "/keys/w1a.key",
                            allowed_keys_dir=etc + "/fleet"), "/")
    sec = security_from_config(cfg)
    assert len(sec.allowed_public_keys) == len(NODES)


def test_a_rendered_secret_key_made_readable_by_others_still_stops_the_start_up(tmp_path):
    """Rule: the start-up path (``secret_key_path`` of a node config) refuses a secret key
    others can read, with the chmod that fixes it; a public key in the secret key's place is
    named as no secret key first, whatever its mode (the content is checked before the
    mode)."""
    from agent.net.security import SecurityError

    assert _render(tmp_path) == 0
    etc = str(tmp_path / "out/devices/w1a/etc/edge-agent")
    obj = dict(_as_obj(load_config(etc + "/w1a.toml")), public_key_path=etc + "/keys/w1a.key",
               allowed_keys_dir=etc + "/fleet")
    os.chmod(etc + "/keys/w1a.key_secret", 0o644)
    with pytest.raises(SecurityError, match="has mode 0644; .*chmod 600"):
        security_from_config(parse_config(dict(obj, secret_key_path=etc + "/keys/w1a.key_secret"),
                                          "/"))
    with pytest.raises(SecurityError, match="w1a.key holds no secret-key; give the "
                                            "NAME.key_secret file"):
        security_from_config(parse_config(dict(obj, secret_key_path=etc + "/keys/w1a.key"), "/"))


def _as_obj(cfg):
    import dataclasses

    obj = dataclasses.asdict(cfg)
    obj["peers"] = [dict(p) for p in obj["peers"]]
    obj["thresholds"] = list(obj["thresholds"])
    return obj


@pytest.mark.parametrize("extra,message", [
    ("w9 10.0.0.99\n", "hosts.txt:12: w9: not a node of the topology"),
    ("w1a 10.0.0.99\n", "hosts.txt:12: w1a: listed twice"),
    ("", None),
])
def test_a_bad_inventory_is_one_line_naming_the_entry(tmp_path, capsys, extra, message):
    """Unknown or repeated nodes, bad ports, clashing ports and missing nodes stop the render
    with one line that names the file, the line and the node."""
    path = _inventory(tmp_path, extra)
    rc = main(["fleet", "render", "--topology", "default", "--inventory", path,
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    if message is None:
        assert rc == 0
        return
    assert rc == 2 and len(err) == 1 and message in err[0]


@pytest.mark.parametrize("text,message", [
    ("a 1.2.3.4 control=x\nb h\n", "inv:1: a: control=x is not a port number"),
    ("a 1.2.3.4 control=\u00b2\nb h\n", "inv:1: a: control=\u00b2 is not a port number"),
    ("a 1.2.3.4 colour=5\nb h\n", "inv:1: a: unknown key 'colour'"),
    ("a h\nb h control=5551\n", "inv:2: b: port 5551 on h is already a's"),
    ("a h\n", "inv: no line for b"),
    ("a\n", "inv:1: 'a': expected NODE HOST"),
])
def test_inventory_errors_name_the_line(text, message):
    """Each malformed inventory line is reported with its file, line number and node."""
    with pytest.raises(InventoryError, match=message.replace("(", r"\(")):
        parse_inventory(text, ["a", "b"], "inv", sources=["a"])


def test_two_workers_on_one_host_do_not_clash_on_the_unused_client_port():
    """Only sources hold a client port, so workers sharing a host need no client= setting."""
    hosts = parse_inventory("a h\nb h control=1 data=2 metrics=3\n", ["a", "b"], "inv")
    assert hosts["b"].control_port == 1 and hosts["a"].client_port == hosts["b"].client_port


def test_a_network_client_endpoint_needs_curve_and_client_keys():
    """A source's client_bind may leave loopback only when CURVE serves it to listed client
    keys (client_keys_dir, security = "curve"); otherwise it is a config error."""
    src = {"node_id": "s1", "role": "source", "bundle": "b", "state_dir": "s",
           "control_bind": "tcp://127.0.0.1:1", "data_bind": "tcp://127.0.0.1:2",
           "arrival": "client", "client_bind": "tcp://0.0.0.0:5000",
           "peers": [{"id": "w1", "stage": 1, "control_address": "tcp://127.0.0.1:3",
                      "data_address": "tcp://127.0.0.1:4", "public_key": "k"}]}
    with pytest.raises(ConfigError, match="unless client_keys_dir serves it over CURVE"):
        parse_config(src, "/x")
    with pytest.raises(ConfigError, match="client_keys_dir: needs security"):
        parse_config(dict(src, client_keys_dir="clients"), "/x")
    cfg = parse_config(dict(src, client_keys_dir="clients", security="curve",
                            secret_key_path="k_secret", public_key_path="k"), "/x")
    assert cfg.client_keys_dir == "/x/clients"


def test_a_workers_calibration_measures_the_engine_its_agent_runs(tmp_path, capsys):
    """Rule: a worker's calibrate.env runs ``calibrate`` with its agent's backend, precision,
    threads (and plan cache when set), so the profile entries it writes are the ones the agent
    looks up (they are keyed by backend and precision); the arguments are valid calibrate
    options."""
    import argparse
    import shlex

    from agent.commands import calibrate

    assert _render(tmp_path, "--policy", "fixed") == 0
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    for n in NODES[2:]:
        etc = tmp_path / "out" / "devices" / n / "etc" / "edge-agent"
        cfg = load_config(str(etc / (n + ".toml")))
        env = dict(line.split("=", 1) for line in (etc / "calibrate.env").read_text().splitlines()
                   if line and not line.startswith("#"))
        assert env["EDGE_AGENT_BUNDLE"] == cfg.bundle
        args = parser.parse_args(["--bundle", cfg.bundle] + shlex.split(
            env["EDGE_AGENT_CALIBRATE_ARGS"]))
        assert (args.modes, args.backend, args.precision, args.threads) == (
            "all", cfg.backend, cfg.precision, cfg.engine_threads)
        assert args.cache_dir == (cfg.engine_cache_dir or None)


def test_the_drive_topology_says_whether_the_fleet_emulates_and_names_its_policy(tmp_path,
                                                                                 capsys):
    """testbed.json's fleet object says whether the agents emulate the topology's capacities
    and link rates (false without --emulate: they are nominal there), and the suggested
    `testbed` command names the policy the fleet runs."""
    from agent.testbed.fleet import emulation_line, fleet_emulates
    from agent.testbed.topology import load_topology

    drive = str(tmp_path / "out" / "testbed.json")
    for extra, emulates in (((), False), (("--emulate",), True)):
        assert _render(tmp_path, "--policy", "cf", *extra) == 0
        printed = capsys.readouterr().out
        assert ("drive load from here: edge-agent testbed --topology %s --policies cf" % drive
                in printed.splitlines())
        assert json.loads(open(drive).read())["fleet"]["emulated"] is emulates
        topo = load_topology(drive)
        assert fleet_emulates(topo) is emulates
        assert ("workers emulated" in emulation_line(topo)) is emulates
