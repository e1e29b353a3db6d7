"""Config inputs at the limits of the parsers fail with one clear line, never a traceback."""

from __future__ import annotations

import pytest

from agent.cli import main
from agent.config.checks import check_endpoint
from agent.config.fields import Fields
from agent.config.jsonfile import read_json_file
from agent.config.node import ConfigError, load_config, parse_config
from agent.errors import EXIT_CONFIG, UsageError
from tests.unit.test_config_checks import _worker

BIG = 10 ** 400  # more than a float holds


def test_an_integer_too_large_for_a_float_is_not_a_finite_number():
    """Rule: Fields.num refuses a 400-digit integer as a field error, shown cut short."""
    with pytest.raises(UsageError, match=r"x\.rate: must be a finite number") as info:
        Fields({"rate": BIG}, "x").num("rate", lo=0)
    assert "401 characters" in str(info.value) and len(str(info.value)) < 200
    with pytest.raises(UsageError, match="must be a finite number"):
        Fields({"rate": -BIG}, "x").num("rate")


def test_a_huge_integer_in_a_node_config_names_its_field(tmp_path, capsys):
    """Rule: `run` on a config whose tradeoff is a 400-digit integer exits 78 naming the field."""
    path = tmp_path / "node.toml"
    path.write_text('node_id = "w1"\nrole = "worker"\nstage = 1\nbundle = "b"\nstate_dir = "s"\n'
                    'control_bind = "tcp://127.0.0.1:5551"\ndata_bind = "tcp://127.0.0.1:5552"\n'
                    'security = "none"\ntradeoff = %d\n' % BIG)
    assert main(["run", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "tradeoff: must be a finite number" in err and "Traceback" not in err


def test_a_config_nested_too_deep_is_a_config_error(tmp_path):
    """Rule: a node config nested 2000 levels is 'not valid TOML', not a RecursionError."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML: nested too deep"):
        load_config(str(path))


def test_a_config_integer_of_too_many_digits_is_a_config_error(tmp_path):
    """Rule: an integer longer than Python converts is 'not valid TOML', one line."""
    path = tmp_path / "long.toml"
    path.write_text("tradeoff = " + "1" * 5000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(str(path))
    assert "\n" not in str(info.value) and "sys." not in str(info.value)


def test_a_json_integer_of_too_many_digits_is_a_usage_error_naming_where(tmp_path):
    """Rule: read_json_file refuses an integer of more digits than Python converts (4300, on
    every Python version) as the file's own one-line error naming the field, without
    Python's sys.set_int_max_str_digits hint."""
    path = tmp_path / "s.json"
    path.write_text('{"a": [1, {"b": -%s}]}' % ("1" * 5000))
    with pytest.raises(UsageError) as info:
        read_json_file(str(path), UsageError, "scenario")
    assert str(info.value) == "%s: a[1].b: number too large, got an integer of 5000 digits " \
        "(at most 4300)" % path
    # a repeated key replacing the first long integer: the one left is still found
    path.write_text('{"b": %s, "b": 2, "c": [%s]}' % ("1" * 5000, "2" * 4301))
    with pytest.raises(UsageError, match=r": c\[0\]: number too large, got an integer of 4301"):
        read_json_file(str(path), UsageError, "scenario")
    path.write_text('{"a": %s}' % ("1" * 4300))  # the longest that converts: read as it is
    assert read_json_file(str(path), UsageError, "scenario") == {"a": int("1" * 4300)}


@pytest.mark.parametrize("text,where", [
    ('{"tradeoff": 0.2, "knobs": {}, "tradeoff": 0.9}', "tradeoff: given twice"),
    ('{"workers": [{"id": "w1"}, {"id": "w2", "stage": 1, "id": "w3"}]}',
     "workers[1].id: given twice"),
    ('{"knobs": {"rounds": 1, "rounds": 2, "rounds": 3}}', "knobs.rounds: given 3 times"),
    ('{"a": {"b": 1, "b": 2}, "a": 3}', "a: given twice"),  # the inner one is gone
    ('{"b": %s, "b": 2}' % ("1" * 5000), "b: given twice"),  # it hid the long integer
])
def test_a_json_key_given_twice_in_one_object_is_an_error_naming_it(tmp_path, text, where):
    """Rule: a key repeated in one JSON object is refused, naming the key by its path (JSON
    decoders keep the last one silently; the TOML reader refuses a repeated key)."""
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        read_json_file(str(path), UsageError, "scenario")
    assert str(info.value) == "%s: %s" % (path, where)


def test_a_scenario_and_a_calibration_profile_with_a_repeated_key_are_refused(tmp_path):
    """Rule: every file read through the project's JSON reader refuses a repeated key: a
    scenario (``plan``, ``simulate``) and a calibration profile, each naming the file first."""
    from agent.policies.setting import ScenarioError
    from agent.scenario.format import load_scenario
    from calibration.profile import ProfileError, load_profile

    sc = tmp_path / "s.json"
    sc.write_text('{"tradeoff": 0.2, "tradeoff": 0.9}')
    with pytest.raises(ScenarioError, match=r"^%s: tradeoff: given twice$" % sc):
        load_scenario(str(sc))
    prof = tmp_path / "p.json"
    prof.write_text('{"format": "edge-agent-calibration-profile", "version": 1, "version": 1, '
                    '"entries": []}')
    with pytest.raises(ProfileError, match=r"^%s: version: given twice$" % prof):
        load_profile(str(prof))


@pytest.mark.parametrize("endpoint", ["tcp://[::1:17572", "tcp://::1]:5", "tcp://not a host!:17572",
                                      "tcp://h\u00fc:5", "tcp://a;b:5", "tcp://999.1.1.1:5",
                                      "tcp://[fe80::1%a b]:5", "tcp://[host]:5"])
def test_a_malformed_tcp_host_is_refused(endpoint):
    """Rule: a tcp host with unbalanced brackets, spaces or characters no host name or IP
    literal has is refused naming the field, not left to fail (or never connect) later."""
    with pytest.raises(ConfigError, match=r"^peers\[0\]\.data_address: host must be"):
        check_endpoint(endpoint, "peers[0].data_address", ConfigError)


@pytest.mark.parametrize("endpoint", ["tcp://*:5551", "tcp://0.0.0.0:1", "tcp://eth0:5551",
                                      "tcp://jetson-2.lab.example:5552", "tcp://[fd00::11]:5551",
                                      "tcp://[fe80::1%eth0]:5551", "tcp://localhost:9"])
def test_host_names_addresses_and_interfaces_pass(endpoint):
    """Rule: '*', host and interface names, IPv4 and bracketed IPv6 (with a zone) are accepted."""
    assert check_endpoint(endpoint, "e", ConfigError) == endpoint


def test_a_peer_with_a_malformed_address_names_the_peer_field():
    """Rule: the error names the peer's address, not the node's own bind."""
    peer = {"id": "s1", "stage": 0, "control_address": "tcp://10.0.0.1:5551",
            "data_address": "tcp://not a host!:17572"}
    with pytest.raises(ConfigError, match=r"peers\[0\]\.data_address: host must be"):
        parse_config(_worker(peers=[peer]))


@pytest.mark.parametrize("threads", [0, 1025, 2 ** 40])
def test_engine_threads_is_bounded_at_parse(threads):
    """Rule: engine_threads outside 1..1024 is a field error, not an engine load failure."""
    with pytest.raises(ConfigError, match=r"config\.engine_threads: must be an integer in \[1, 1024\]"):
        parse_config(_worker(engine_threads=threads))
    assert parse_config(_worker(engine_threads=1024)).engine_threads == 1024


def test_max_queue_tasks_is_at_most_what_a_neighbours_heartbeat_may_claim():
    """Rule: max_queue_tasks above MAX_QUEUE_TASKS is refused by name: a node's neighbours
    refuse a heartbeat claiming more queued tasks than that (agent.node.peerstate)."""
    from agent.config.checks import MAX_QUEUE_TASKS
    assert parse_config(_worker(max_queue_tasks=MAX_QUEUE_TASKS), "/").max_queue_tasks \
        == MAX_QUEUE_TASKS
    with pytest.raises(ConfigError, match=r"max_queue_tasks: must be an integer in \[1, 1048576\]"):
        parse_config(_worker(max_queue_tasks=MAX_QUEUE_TASKS + 1), "/")
