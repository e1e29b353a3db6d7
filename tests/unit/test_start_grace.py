"""The start-up grace before a "no route" verdict is the node config's ``start_grace_s``
(seconds, default 5.0): validated like the other periods, written and read back by the config
files, and used by the loop as the larger of it and the configured neighbour silence. The
``[[peers]]`` entries parse as before from their own module, re-exported by the node config."""

from __future__ import annotations

import dataclasses
import math

import pytest

from agent.config.jsonfile import load_toml
from agent.config.node import ConfigError, Peer, dump_config, parse_config
from agent.config.peer import Peer as PeerHome
from agent.node.build import build
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.demo import DEMO_BUNDLE_DIR


def _table(**over):
    """A minimal source config table (parse_config's input), with ``over``."""
    obj = {"node_id": "s1", "role": "source", "bundle": "/b", "state_dir": "/s",
           "control_bind": "tcp://127.0.0.1:41001", "data_bind": "tcp://127.0.0.1:41002",
           "peers": [{"id": "w1", "stage": 1, "control_address": "tcp://127.0.0.1:41003",
                      "data_address": "tcp://127.0.0.1:41004"}]}
    obj.update(over)
    return obj


def test_start_grace_defaults_to_5_s_and_is_read_and_written_by_the_config_file():
    """Rule: without the field the grace is 5.0 s; a value given is kept, and dump_config
    writes it so that parse_config of the text gives the same config back."""
    assert parse_config(_table()).start_grace_s == 5.0
    cfg = parse_config(_table(start_grace_s=1.5))
    assert cfg.start_grace_s == 1.5
    text = dump_config(cfg)
    assert "start_grace_s = 1.5" in text
    assert parse_config(load_toml(text, ConfigError, "config")) == cfg


@pytest.mark.parametrize("bad,why", [
    (0, "must be in [0.001, 86400], got 0"),
    (-1.0, "must be in [0.001, 86400], got -1.0"),
    (1e9, "must be in [0.001, 86400], got 1000000000.0"),
    (math.inf, "must be a finite number, got inf"),
    (math.nan, "must be a finite number, got nan"),
    (True, "must be a finite number, got True"),
    ("5", "must be a finite number, got '5'"),
])
def test_a_start_grace_that_is_not_a_positive_finite_number_is_refused_naming_the_field(bad, why):
    """Rule: start_grace_s is checked like the other periods (0.001..86400 s, a finite number,
    no bool or string); the error names the field and the value."""
    with pytest.raises(ConfigError) as err:
        parse_config(_table(start_grace_s=bad))
    assert str(err.value) == "config.start_grace_s: " + why


def test_peers_parse_from_their_own_module_with_errors_naming_the_entry():
    """Rule: ``agent.config.node.Peer`` is the peer module's class (one home), a parsed
    entry is a Peer, and a bad entry's error still names its field in the node config."""
    assert Peer is PeerHome
    assert parse_config(_table()).peers == (
        Peer("w1", 1, "tcp://127.0.0.1:41003", "tcp://127.0.0.1:41004"),)
    bad = _table()
    bad["peers"] = [dict(bad["peers"][0], stage=-1)]
    with pytest.raises(ConfigError, match=r"^config\.peers\[0\]\.stage: must be an integer "
                                          r">= 0, got -1$"):
        parse_config(bad)
    bad["peers"] = [dict(bad["peers"][0], stage=1, colour="red")]
    with pytest.raises(ConfigError, match=r"^config\.peers\[0\]: unknown field\(s\) colour"):
        parse_config(bad)


def _worker_config(tmp_path, **over):
    """The real node config of worker w1 of a source -> w1 -> w2 chain, with ``over``."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 2}, {"id": "w2", "stage": 3,
                                                                  "last_stage": 4}],
        "links": [{"from": "s1", "to": "w1"}, {"from": "w1", "to": "w2"}]})
    cfg = node_configs(topo, DEMO_BUNDLE_DIR, "fixed", 1.0, 1.0, str(tmp_path))["w1"]
    return dataclasses.replace(cfg, **over)


@pytest.mark.parametrize("grace_s,interval_s,want_s", [(1.0, 0.5, 2.0), (7.0, 0.5, 7.0),
                                                       (0.2, 0.05, 0.2)])
def test_the_loop_waits_the_configured_grace_but_never_less_than_the_neighbour_silence(
        tmp_path, grace_s, interval_s, want_s):
    """Rule: a built node's start-up grace is max(start_grace_s, neighbour silence) -- a
    neighbour with long heartbeat periods may not be heard sooner -- and its unlisted-node
    watch waits twice that."""
    cfg = _worker_config(tmp_path, start_grace_s=grace_s, heartbeat_interval_s=interval_s,
                         neighbour_timeout_rounds=4)
    built = build(cfg)
    try:
        assert built.node._grace_s == pytest.approx(want_s)
        assert built.node._reach.grace_s == pytest.approx(2 * want_s)
    finally:
        built.close()
