"""Node config: validation names the bad field, dump_config round-trips."""

from __future__ import annotations

import pytest

from agent.config.node import ConfigError, NodeConfig, Peer, dump_config, load_config, parse_config


def _worker(**over):
    obj = {
        "node_id": "w1",
        "role": "worker",
        "stage": 1,
        "bundle": "bundle",
        "state_dir": "state",
        "control_bind": "tcp://127.0.0.1:5551",
        "data_bind": "tcp://127.0.0.1:5552",
        "peers": [
            {"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
             "data_address": "tcp://127.0.0.1:5542", "link_rate_bytes_s": 1e6},
            {"id": "w2", "stage": 2, "control_address": "tcp://127.0.0.1:5561",
             "data_address": "tcp://127.0.0.1:5562"},
        ],
    }
    obj.update(over)
    return obj


def test_relative_paths_resolve_against_the_config_folder():
    cfg = parse_config(_worker(), "/etc/edge")
    assert cfg.bundle == "/etc/edge/bundle" and cfg.state_dir == "/etc/edge/state"
    assert [p.id for p in cfg.successors] == ["w2"]
    assert [p.id for p in cfg.sources] == ["s1"] and cfg.predecessors == cfg.sources
    assert cfg.policy == "dtoee" and cfg.thresholds == ()


@pytest.mark.parametrize("over, needle", [
    ({"role": "camera"}, "config.role: must be one of source|worker"),
    ({"stage": 0}, "config.stage: a worker serves a stage >= 1"),
    ({"policy": "random"}, "config.policy"),
    ({"ack_timeout_s": -1}, "config.ack_timeout_s: must be in [0.001, 86400]"),
    ({"data_bind": "localhost:1"}, "config.data_bind: must be a ZeroMQ endpoint"),
    ({"thresholds": [0.5, 1.5]}, "config.thresholds"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"rounds_per_slot": 200}, "config.rounds_per_slot: configuration phase"),
    ({"emulate_links": True}, "needs link_rate_bytes_s > 0 for peer(s) w2"),
    ({"peers": []}, "a worker needs the sources"),
    ({"security": "curve", "secret_key_path": "a", "public_key_path": "b"}, "needs public_key"),
    ({"stage": 2, "last_stage": 1}, "config.last_stage: must be 0 (one stage) or >= stage 2"),
])
def test_bad_values_raise_config_error_naming_the_field(over, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(_worker(**over), "/x")
    assert needle in str(info.value)


def test_bad_peer_field_names_its_index():
    obj = _worker()
    obj["peers"][1]["stage"] = -1
    with pytest.raises(ConfigError, match=r"config.peers\[1\].stage: must be an integer >= 0"):
        parse_config(obj, "/x")


def test_dump_config_round_trips_through_load_config(tmp_path):
    cfg = parse_config(_worker(policy="fixed", policy_knobs={"routing": {"w2": 1.0}},
                               thresholds=[0.7, 1.0], emulate_capacity_flops=2.5e6,
                               power_mode='odd "mode"'), str(tmp_path))
    path = tmp_path / "node.toml"
    path.write_text(dump_config(cfg))
    again = load_config(str(path))
    assert again == cfg
    assert isinstance(again.peers[0], Peer) and isinstance(again, NodeConfig)


def test_load_config_reports_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


def test_a_worker_holding_several_stages_has_successors_serving_the_next_ones():
    obj = _worker(last_stage=2)
    obj["peers"].append({"id": "all", "stage": 1, "last_stage": 3,
                         "control_address": "tcp://127.0.0.1:5571",
                         "data_address": "tcp://127.0.0.1:5572"})
    obj["peers"].append({"id": "w4", "stage": 4, "control_address": "tcp://127.0.0.1:5581",
                         "data_address": "tcp://127.0.0.1:5582"})
    cfg = parse_config(obj, "/x")
    assert cfg.stages == (1, 2)
    assert [p.id for p in cfg.successors] == ["w2", "all"]  # serve stage 2 or 3; w4 does not
    assert [p.id for p in cfg.predecessors] == ["s1", "all"]
    assert cfg.peer("all").serves(3) and not cfg.peer("all").serves(4)


def test_client_socket_must_stay_local():
    src = {"node_id": "s1", "role": "source", "bundle": "b", "state_dir": "s",
           "control_bind": "tcp://127.0.0.1:1", "data_bind": "tcp://127.0.0.1:2",
           "arrival": "client", "client_bind": "tcp://0.0.0.0:5000",
           "peers": [{"id": "w1", "stage": 1, "control_address": "tcp://127.0.0.1:3",
                      "data_address": "tcp://127.0.0.1:4"}]}
    with pytest.raises(ConfigError, match="client_bind: must be ipc://PATH or a loopback"):
        parse_config(src, "/x")
    assert parse_config(dict(src, client_bind="ipc:///run/edge/client"), "/x").arrival == "client"


@pytest.mark.parametrize("over,message", [
    ({"policy": "random"}, r"^config\.policy: unknown policy 'random' \(known: dtoee, .*fixed"),
    ({"policy": "ngto"}, r"^config\.policy: policy 'ngto' cannot run on a node: a central "),
    ({"policy_knobs": {"stepp": "paper"}},
     r"^config\.policy_knobs\.stepp: unknown field \(did you mean 'step'\?\)"),
    ({"policy_knobs": {"rounds": 30}},
     r"^config\.policy_knobs\.rounds: not used by a node: a node runs rounds_per_slot rounds"),
    ({"policy_knobs": {"tolerance": 0.01}}, r"^config\.policy_knobs\.tolerance: not used by a node"),
    ({"policy_knobs": {"initial_threshold": 0.7}},
     r"^config\.policy_knobs\.initial_threshold: not used by a node: .*thresholds"),
    ({"policy_knobs": {"ga_staleness": 2}},
     r"^config\.policy_knobs\.ga_staleness: not used by a node: ga runs on no node"),
    ({"policy_knobs": {"baseline_thresholds": "fixed"}},
     r"^config\.policy_knobs\.baseline_thresholds: not used by a node: how the baselines"),
    ({"policy_knobs": {"momentum": 2.0}}, r"^config\.policy_knobs\.momentum: must be in \[0, 1\)"),
    ({"policy": "cf", "policy_knobs": {"routing": {}}},
     r"^config\.policy_knobs\.routing: unknown field; known: none"),
    ({"policy": "fixed", "policy_knobs": {"routing": {"w2": -1}}},
     r"^config\.policy_knobs\.routing: must be a table"),
])
def test_policy_and_knobs_are_checked_by_the_policy_naming_the_config_field(over, message):
    """The policy name comes from the registry (one that cannot run on a node says why); each
    policy reads its own policy_knobs: a typo gets a hint, a knob the node would ignore is an
    error saying why, a bad value names the field."""
    with pytest.raises(ConfigError, match=message):
        parse_config(_worker(**over))


def test_knobs_a_node_honours_are_accepted():
    """DTO-EE's routing and threshold-step knobs pass into the config unchanged."""
    knobs = {"step": "paper", "paper_step_size": 0.2, "m": 3, "threshold_step": 0.1}
    assert parse_config(_worker(policy_knobs=knobs)).policy_knobs == knobs



def test_a_bundle_path_naming_a_regular_file_is_refused_naming_config_bundle(tmp_path):
    """Rule: `bundle` pointing at a regular file (not a bundle directory, nor its bundle.json)
    is a ConfigError naming config.bundle, the path and that a bundle directory is expected,
    not a bundle.json inside the file."""
    (tmp_path / "model.onnx").write_text("not a bundle")
    path = tmp_path / "node.toml"
    path.write_text(dump_config(parse_config(_worker(bundle="model.onnx"), str(tmp_path))))
    with pytest.raises(ConfigError, match=r"node.toml: config.bundle: .*model.onnx is a file; "
                                          r"expected a bundle directory \(holding bundle.json\)"
                       ) as info:
        load_config(str(path))
    assert "model.onnx/bundle.json" not in str(info.value)
    (tmp_path / "b").mkdir()  # the bundle's own bundle.json is still a way to name it
    (tmp_path / "b" / "bundle.json").write_text("{}")
    path.write_text(dump_config(parse_config(_worker(bundle="b/bundle.json"), str(tmp_path))))
    assert load_config(str(path)).bundle == str(tmp_path / "b" / "bundle.json")
