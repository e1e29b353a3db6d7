"""A source's ``max_message_bytes`` travels with a rendered fleet: ``fleet render`` writes it
into every node entry of ``fleet.json``, ``submit --fleet`` and the testbed driving the fleet
take it as the source's limit (``--max-message-bytes`` still overrides), and a manifest
without it (an earlier render) still reads, with the node config's default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from agent.cli import main
from agent.commands.submit_checks import dropped_for_size
from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES
from agent.errors import UsageError
from agent.fleet.client import Client
from agent.fleet.manifest import load_manifest
from agent.net.keyfiles import load_secret_key_file
from agent.testbed.fleet import check_sources, fleet_settings, source_limits
from agent.testbed.ports import free_ports
from agent.testbed.topology import load_topology

BIG = 32 * 1024 * 1024  # above the node config's default (16 MiB)


def _render(tmp_path, limit):
    """Render a source and a worker whose topology sets agent.max_message_bytes = ``limit``
    (None: not set), the source's client port free and nothing listening there."""
    topo = tmp_path / "topo.json"
    agent = {} if limit is None else {"max_message_bytes": limit}
    topo.write_text(json.dumps({
        "bundle": "demo", "agent": agent, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}]}), encoding="utf-8")
    ports = free_ports(6)
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 127.0.0.1 control=%d data=%d client=%d metrics=0\n"
                   "w1 127.0.0.1 control=%d data=%d metrics=0\n" % tuple(ports[:5]),
                   encoding="utf-8")
    out = tmp_path / "out"
    assert main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv),
                 "--out", str(out), "--root", str(tmp_path / "root"),
                 "--policy", "mdi-exit"]) == 0
    return out


def _images(tmp_path, shape):
    path = tmp_path / "x.npz"
    np.savez(str(path), x=np.zeros(shape, np.float32))
    return str(path)


def test_render_records_every_nodes_max_message_bytes_in_fleet_json(tmp_path, capsys):
    """Rule: fleet.json's node entries carry max_message_bytes as the node configs have it:
    the topology's agent.max_message_bytes, else the node config's default."""
    man = json.loads((_render(tmp_path, BIG) / "fleet.json").read_text())
    assert {n: e["max_message_bytes"] for n, e in man["nodes"].items()} == {"cam": BIG,
                                                                         "w1": BIG}
    man = json.loads((_render(tmp_path, None) / "fleet.json").read_text())
    assert man["nodes"]["cam"]["max_message_bytes"] == DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("bad", [0, -5, "16777216", True, 1.5])
def test_a_manifest_max_message_bytes_that_is_not_a_positive_whole_number_is_one_line(
        tmp_path, capsys, bad):
    """Rule: a fleet.json node entry's max_message_bytes must be a whole number > 0 (a bool
    is none): anything else is one error naming the file and the field; an entry without it
    (a render before the field) reads."""
    out = _render(tmp_path, None)
    man = json.loads((out / "fleet.json").read_text())
    del man["nodes"]["w1"]["max_message_bytes"]
    (out / "fleet.json").write_text(json.dumps(man))
    assert "max_message_bytes" not in load_manifest(str(out))["nodes"]["w1"]
    man["nodes"]["cam"]["max_message_bytes"] = bad
    (out / "fleet.json").write_text(json.dumps(man))
    with pytest.raises(UsageError) as got:
        load_manifest(str(out))
    assert str(got.value).startswith("%s: nodes.cam.max_message_bytes: must be a whole number "
                                     "of bytes > 0" % (out / "fleet.json")), got.value
    assert len(str(got.value).splitlines()) == 1


def test_submit_fleet_refuses_an_input_above_the_recorded_limit_naming_it(tmp_path, capsys):
    """Rule: `submit --fleet` checks an input against the source's max_message_bytes as
    fleet.json records it (here 1024, below the node config's default), before sending, in one
    line naming that limit as fleet.json's; --max-message-bytes overrides it (the input then
    goes on to the connection check: nothing listens)."""
    out = _render(tmp_path, 1024)
    images = _images(tmp_path, (2, 1, 28, 28))  # 3136 bytes each
    args = ["submit", "--fleet", str(out), "--source", "cam", "--images", images]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "above the source's max_message_bytes 1024 (fleet.json's, for cam)" in err, err
    assert "render the fleet again; 2 input(s) not sent" in err, err
    assert "(given)" not in err and "default" not in err, err
    assert main(args + ["--max-message-bytes", "100000", "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert "above the source's max_message_bytes" not in err and "nothing listens" in err, err


def test_submit_fleet_sends_an_input_the_fleet_takes_above_the_default_limit(tmp_path, capsys):
    """Rule: a fleet rendered with max_message_bytes above the node config's default (32 MiB)
    takes an input of 17 MB: `submit --fleet` does not refuse it as above the default (it goes
    on to the connection check), while a fleet.json without the field (an earlier render)
    falls back to the default and refuses it, naming the default."""
    out = _render(tmp_path, BIG)
    images = _images(tmp_path, (1, 4, 1100, 1000))  # 17.6 MB
    args = ["submit", "--fleet", str(out), "--source", "cam", "--images", images,
            "--timeout", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "max_message_bytes" not in err and "nothing listens" in err, err
    man = json.loads((out / "fleet.json").read_text())
    del man["nodes"]["cam"]["max_message_bytes"]
    (out / "fleet.json").write_text(json.dumps(man))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "above the source's max_message_bytes %d (the node config's default)" % (
        DEFAULT_MAX_MESSAGE_BYTES) in err, err


def test_no_answer_to_a_message_over_twice_the_recorded_limit_names_zeromqs_drop():
    """Rule: the likely cause of no answer at all to an input whose message is over twice the
    source's max_message_bytes (as fleet.json records it, else the node config's default)
    is ZeroMQ dropping the connection; a message under twice the limit gets no such cause."""
    x = np.zeros((1, 1, 28, 28), np.float32)  # a message of about 3.3 kB
    with Client("tcp://127.0.0.1:%d" % free_ports(1)[0], max_message_bytes=1 << 20) as c:
        said = dropped_for_size(c, x, "submit-1-1", 1024)
        assert "over twice the source's max_message_bytes 1024 (fleet.json's)" in said, said
        assert ("ZeroMQ drops a connection whose message is over about twice the source's "
                "max_message_bytes") in said and "--max-message-bytes 1048576" in said, said
        assert dropped_for_size(c, x, "submit-1-1", 4096) == ""
        assert dropped_for_size(c, x, "submit-1-1") == ""  # far under twice the default


def test_the_testbed_driving_a_render_checks_the_replay_against_the_recorded_limit(
        tmp_path, capsys):
    """Rule: the testbed driving a rendered fleet (its testbed.json) takes each source's limit
    from the render's fleet.json, and refuses before sending anything a replay input above it,
    in one line naming the source and the limit; an input under it passes that check."""
    out = _render(tmp_path, 1024)
    topo = load_topology(str(out / "testbed.json"))
    f = fleet_settings(topo)
    assert source_limits(topo, f) == {"cam": 1024}
    x = np.zeros((2, 1, 28, 28), np.float32)
    with pytest.raises(UsageError) as got:
        check_sources(f["clients"], wait_s=0.5, limits=source_limits(topo, f), x=x)
    assert str(got.value).startswith("fleet.replay: fleet.clients.cam: input float32 "
                                     "(1, 1, 28, 28) of 3136 bytes"), got.value
    assert "above the source's max_message_bytes 1024;" in str(got.value), got.value
    assert str(got.value).endswith("render the fleet again; no task sent"), got.value
    try:  # under the limit: on to the connection check (nothing listens)
        check_sources(f["clients"], wait_s=0.5, limits={"cam": 1 << 20}, x=x)
    except UsageError as exc:
        assert "max_message_bytes" not in str(exc), exc
    # the source's client endpoint, served over CURVE with its rendered key: it never answers,
    # so a task sent would be lost, not refused
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_server = True
    sock.curve_secretkey = load_secret_key_file(str(out / "keys" / "cam.key_secret"))[1]
    sock.bind(f["clients"]["cam"])
    try:
        assert main(["testbed", "--topology", str(out / "testbed.json"), "--rates", "5",
                     "--duration", "1", "--out", str(tmp_path / "runs"), "--no-plots"]) == 2
        assert not sock.poll(0), "a task was sent"
    finally:
        sock.close()
        ctx.term()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-agent testbed: error: fleet.replay: "
                                               "fleet.clients.cam: ") and (
        "max_message_bytes 1024;" in err[0]), err
