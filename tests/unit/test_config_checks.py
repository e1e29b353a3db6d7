"""Node-config values that parse but would fail later are refused where they are written."""

from __future__ import annotations

import pytest

from agent.cli import main
from agent.config.checks import check_endpoint, check_node_id, is_loopback_host, short
from agent.config.node import ConfigError, parse_config
from agent.errors import EXIT_CONFIG


def _worker(**over):
    obj = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": "b", "state_dir": "s",
           "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
           "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://10.0.0.1:5551",
                      "data_address": "tcp://10.0.0.1:5552"}]}
    obj.update(over)
    return obj


@pytest.mark.parametrize("endpoint", ["tcp://h:0", "tcp://h:65536", "tcp://h:99999", "tcp://h:*",
                                      "tcp://h", "tcp://:5", "udp://h:5", "ipc://" + "x" * 200,
                                      "tcp://h:\u00b2", "tcp://h:\u0661\u0662"])
def test_endpoints_outside_what_zeromq_binds_are_refused(endpoint):
    """Rule: a tcp port is 1..65535 in ASCII digits (ZeroMQ would wrap 99999 to 34463; a
    superscript or Arabic-Indic digit is not a port), an ipc path fits AF_UNIX."""
    with pytest.raises(ConfigError, match="control_bind"):
        check_endpoint(endpoint, "control_bind", ConfigError)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1", "tcp://*:65535", "ipc:///run/a.sock",
                                      "inproc://x", "tcp://[::1]:5551"])
def test_ordinary_endpoints_pass(endpoint):
    """Rule: ordinary endpoints are accepted unchanged."""
    assert check_endpoint(endpoint, "e", ConfigError) == endpoint


@pytest.mark.parametrize("node_id", ["", "w" * 65, "a b", "a/b", "a|b", "-w", "ü1"])
def test_node_ids_that_cannot_be_socket_identities_are_refused(node_id):
    """Rule: ids are 1-64 of [A-Za-z0-9._-], starting with a letter or digit."""
    with pytest.raises(ConfigError, match="node_id"):
        check_node_id(node_id, "node_id", ConfigError)


def test_a_long_value_is_cut_short_in_the_message():
    """Rule: a 20,000-character value still gives a short one-line message."""
    text = short("w" * 20000)
    assert len(text) < 100 and "20000 characters" in text


def test_metrics_beyond_loopback_only_with_metrics_public():
    """Rule: a non-loopback metrics_host is refused unless metrics_public = true."""
    with pytest.raises(ConfigError, match="metrics_public = true"):
        parse_config(_worker(metrics_port=9464, metrics_host="0.0.0.0"))
    cfg = parse_config(_worker(metrics_port=9464, metrics_host="0.0.0.0", metrics_public=True))
    assert cfg.metrics_public
    assert parse_config(_worker(metrics_port=9464, metrics_host="127.0.0.2")).metrics_host
    assert parse_config(_worker(metrics_host="0.0.0.0")).metrics_port == 0  # off: no check
    assert is_loopback_host("localhost") and is_loopback_host("::1")
    assert not is_loopback_host("10.0.0.1") and not is_loopback_host("example.org")


@pytest.mark.parametrize("over, field", [
    ({"heartbeat_interval_s": 1e-6}, "heartbeat_interval_s"),
    ({"round_interval_s": 0.0001, "rounds_per_slot": 1}, "round_interval_s"),
    ({"max_message_bytes": 2 ** 62}, "max_message_bytes"),
    ({"metrics_port": 70000}, "metrics_port"),
])
def test_ranges_are_checked(over, field):
    """Rule: intervals >= 1 ms, max_message_bytes within what libzmq holds, ports <= 65535."""
    with pytest.raises(ConfigError, match=field):
        parse_config(_worker(**over))


@pytest.mark.parametrize("over, message", [
    ({"timing_runs": 10 ** 9},
     "config.timing_runs: must be an integer in [1, 1000], got 1000000000"),
    ({"warmup_runs": 5000}, "config.warmup_runs: must be an integer in [0, 1000], got 5000"),
    ({"heartbeat_interval_s": 1e308},
     "config.heartbeat_interval_s: must be in [0.001, 86400], got 1e+308"),
    ({"slot_length_s": 1e308}, "config.slot_length_s: must be in [0.001, 86400], got 1e+308"),
    ({"result_timeout_s": 1e9}, "config.result_timeout_s: must be in [0.001, 86400], got"),
    ({"emulate_capacity_flops": 1e-300},
     "config.emulate_capacity_flops: must be in [1, 1e+24], got 1e-300"),
    ({"emulate_capacity_flops": 1e30},
     "config.emulate_capacity_flops: must be in [1, 1e+24], got 1e+30"),
])
def test_values_an_agent_never_gets_ready_with_are_refused(over, message):
    """Rule: start-up timing runs at most 1000, every period and timeout at most a day, an
    emulated capacity 0 (off) or in a scenario's range: ``timing_runs = 10**9`` timed forever,
    a heartbeat or slot of 1e308 s never came, 1e-300 FLOP/s padded every task to forever."""
    with pytest.raises(ConfigError) as info:
        parse_config(_worker(**over))
    assert str(info.value).startswith(message), str(info.value)


def test_the_bounds_themselves_are_accepted():
    """Rule: the bounds are inclusive, and 0 still turns emulation off."""
    cfg = parse_config(_worker(timing_runs=1000, warmup_runs=1000, heartbeat_interval_s=86400,
                               result_timeout_s=86400, emulate_capacity_flops=0,
                               slot_length_s=86400.0, rounds_per_slot=20,
                               round_interval_s=0.05))
    assert (cfg.timing_runs, cfg.heartbeat_interval_s, cfg.emulate_capacity_flops) == \
        (1000, 86400.0, 0.0)
    assert parse_config(_worker(emulate_capacity_flops=1.0)).emulate_capacity_flops == 1.0


def test_run_exits_78_on_a_start_up_fault(tmp_path, capsys):
    """Rule: ``edge-agent run`` exits with EXIT_CONFIG and one error line on a bad config."""
    assert main(["run", "--config", str(tmp_path / "absent.toml")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "absent.toml" in err
