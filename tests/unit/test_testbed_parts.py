"""Testbed parts: topology validation, record summaries, rates, table, JSON, port allocation."""

import json
import re
import socket

import pytest

from agent.commands.testbed import parse_rates
from agent.errors import UsageError
from agent.testbed.columns import empirical_remaining, routing_used
from agent.testbed.report import RUN_KEYS, format_table, percentile, summarise_records, write_json
from agent.testbed.topology import TopologyError, load_topology, parse_topology
from agent.testbed.topology_bundle import StageInfo, capacity_tasks_s, scenario_object


def small_topology(**over):
    obj = {
        "sources": [{"id": "s1", "share": 0.5}, {"id": "s2", "share": 0.5}],
        "workers": [{"id": "a", "stage": 1, "emulate_capacity_flops": 3e6},
                    {"id": "b", "stage": 1, "emulate_capacity_flops": 1e6},
                    {"id": "c", "stage": 2, "emulate_capacity_flops": 2e6}],
        "links": [{"from": "s1", "to": "a", "rate_bytes_s": 1e5},
                  {"from": "s1", "to": "b", "rate_bytes_s": 4e5},
                  {"from": "s2", "to": "b"},
                  {"from": "a", "to": "c", "rate_bytes_s": 1e6},
                  {"from": "b", "to": "c", "rate_bytes_s": 1e6}],
    }
    obj.update(over)
    return obj


STAGES = [StageInfo(1e5, 1000.0, True), StageInfo(2e5, 2000.0, False)]


def test_topology_parses_and_names_what_is_emulated():
    """A valid topology parses; the report line names emulated capacities and links."""
    topo = parse_topology(small_topology())
    assert [w.id for w in topo.workers] == ["a", "b", "c"]
    assert topo.capacities_emulated
    line = topo.emulation_summary()
    assert "3/3 workers emulated" in line and "3x spread" in line and "4/5 links" in line


@pytest.mark.parametrize("change, message", [
    ({"sources": [{"id": "s1", "share": 0.7}, {"id": "s2", "share": 0.5}]}, "sum to 1"),
    ({"workers": [{"id": "a", "stage": 0}]}, "workers[0].stage"),
    ({"links": [{"from": "s1", "to": "c"}]}, "links go from stage h to h+1"),
    ({"knobs": {"dtoee": 3}}, "knobs"),
    ({"colour": "red"}, "unknown field"),
    ({"links": [{"from": "s1", "to": "a", "rate_byte_s": 1e5}]},
     "links[0].rate_byte_s: unknown field (did you mean 'rate_bytes_s'?)"),
    ({"thresholds": {"1": 1.5}}, "thresholds.1: must be in (0, 1], got 1.5"),
    ({"knobs": {"dtoe": {"step": "joint"}}}, "knobs.dtoe: no such policy on a node"),
    ({"agent": {"node_id": "x"}}, "agent.node_id: the testbed sets it for each agent"),
    ({"agent": {"policy": "cf"}}, "agent.policy: the testbed sets it for each agent"),
])
def test_topology_errors_name_the_field(change, message):
    """Misuse fails with one line that names the offending field; knobs under a name no node
    policy has, and per-agent fields in ``agent`` (the testbed writes them for each agent), are
    refused rather than ignored or overwritten."""
    with pytest.raises(TopologyError, match=re.escape(message)):
        parse_topology(small_topology(**change))


def test_shipped_default_topology_is_valid_and_heterogeneous():
    """The default topology has >= 2 sources, >= 2 workers per stage, a >= 3x capacity spread
    and links of different emulated rates."""
    topo = load_topology()
    assert len(topo.sources) >= 2
    for h in range(1, topo.num_stages + 1):
        assert len([w for w in topo.workers if w.stage == h]) >= 2
    caps = [w.emulate_capacity_flops for w in topo.workers]
    assert None not in caps and max(caps) >= 3 * min(caps)
    assert len({l.rate_bytes_s for l in topo.links}) >= 2


def test_capacity_and_scenario_follow_the_topology():
    """Capacity is the tightest stage or link cut; the scenario object carries the same numbers."""
    topo = parse_topology(small_topology())
    # stage 1 compute: 4e6/1e5 = 40/s; stage 2: 2e6/2e5/0.5 = 20/s; links into stage 1 include
    # a non-emulated one (unbounded), into stage 2: 2e6/2000/0.5 = 2000/s
    assert capacity_tasks_s(topo, STAGES, [0.5, 1.0]) == pytest.approx(20.0)
    sc = scenario_object(topo, STAGES, 10.0, [0.5, 1.0])
    assert [s["rate"] for s in sc["sources"]] == [5.0, 5.0]
    assert sc["links"][2]["rate"] == 1e9 and sc["remaining"] == [0.5, 1.0]


def test_summary_counts_every_fate_and_measures_completed_tasks():
    """Completed tasks give delay and accuracy; lost tasks and missing records count as lost,
    admission rejections apart; a task recorded twice counts once."""
    recs = [
        {"source": "s1", "id": "1", "status": "completed", "created_mono": 0.0,
         "finished_mono": 0.1, "correct": True, "exit_stage": 1},
        {"source": "s1", "id": "2", "status": "completed", "created_mono": 0.0,
         "finished_mono": 0.3, "correct": False, "exit_stage": 2, "resends": 1},
        {"source": "s2", "id": "1", "status": "lost", "created_mono": 0.0},
        {"source": "s2", "id": "1", "status": "lost", "created_mono": 0.0},
        {"source": "s2", "id": "2", "status": "rejected", "created_mono": 0.0},
    ]
    r = summarise_records(recs, "dtoee", 10.0, True, expected_created=5)
    assert (r.created, r.completed, r.lost, r.rejected, r.resent) == (5, 2, 2, 1, 1)
    assert "rejected" in format_table([r]).splitlines()[0]
    # the delays and accuracy rest on the 2 completed tasks (the table says how many)
    head, _, row = format_table([r]).splitlines()
    assert row.split()[head.split().index("measured")] == "2"
    assert r.mean_delay_s == pytest.approx(0.2) and r.accuracy == pytest.approx(0.5)
    assert r.exit_counts == {1: 1, 2: 1}
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)


def test_table_and_json_have_the_documented_fields(tmp_path):
    """The JSON object is {"runs": [...]} with the documented keys first; the table has a row
    per run."""
    r = summarise_records([], "cf", 5.0, True, expected_created=0)
    text = format_table([r, r])
    assert len(text.splitlines()) == 4 and text.splitlines()[0].startswith("policy")
    path = tmp_path / "out.json"
    write_json(str(path), [r])
    obj = json.loads(path.read_text())
    assert list(obj["runs"][0])[:len(RUN_KEYS)] == list(RUN_KEYS)


def test_rates_accept_tasks_per_second_and_percent_of_capacity():
    """--rates takes tasks/s or N% of capacity; nonsense is a usage error."""
    assert parse_rates("2,50%", 10.0) == [2.0, 5.0]
    for bad in ("", "x", "-1", "3,,4", "5,50%"):
        with pytest.raises(UsageError):
            parse_rates(bad, 10.0)
    with pytest.raises(UsageError, match="capacity"):
        parse_rates("50%", float("inf"))


def test_routing_used_and_remaining_from_counts():
    """Send counters give routing rows, else the policy's final row, else uniform; exit counts
    give the remaining ratios."""
    topo = parse_topology(small_topology())
    stats = {"s1": {"counters": {"sent_to_a": 1, "sent_to_b": 3}},
             "s2": {"routing": {"b": 1.0}}, "a": None}
    rt = routing_used(topo, stats)
    assert rt["s1"] == {"a": 0.25, "b": 0.75} and rt["s2"] == {"b": 1.0}
    assert rt["a"] == {"c": 1.0}
    stats["s1"] = {"routing": {"a": 0.6, "b": 0.2}}
    assert routing_used(topo, stats)["s1"] == pytest.approx({"a": 0.75, "b": 0.25})
    assert empirical_remaining(STAGES, {1: 30, 2: 70}, [0.9, 1.0]) == [0.7, 1.0]


@pytest.mark.parametrize("argv, message", [
    (["--policies", "dtoee,foo"], "unknown policy 'foo'"),
    (["--duration", "0"], "--duration: must be > 0"),
    (["--topology", "/nonexistent/topology.json"], "no such topology file"),
    (["--rates", "10,abc"], "'abc' is not a number"),
    (["--duration", "inf"], "--duration: must be > 0 seconds and at most 86400"),
    (["--json", "/"], "--json: / is a directory"),
    (["--json", "{tmp}/none/r.json"], "--json: {tmp}/none/r.json: its folder does not exist"),
])
def test_testbed_misuse_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    """Wrong options fail before any agent starts: one line naming the value, status 2 (an
    infinite duration was an OverflowError, a bad --json path failed after the whole run)."""
    from agent.cli import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(["testbed", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("change,message", [
    (lambda t: t["agent"].update(polcy="x"), "topo.json: agent.polcy: unknown field"),
    (lambda t: t.update(knobs={"dtoee": {"foo": 1}}), "foo"),
    (lambda t: t.update(fleet={"foo": 1}), "fleet: unknown field(s) ['foo']"),
])
def test_a_topology_no_agent_can_run_fails_before_the_run_folder_exists(
        tmp_path, capsys, change, message):
    """Every agent's config is parsed (a fleet's settings checked) before the run folder is
    made: a bad agent field or knob is one line, exit 2, and leaves no empty run folder."""
    from agent.cli import main
    from agent.testbed.topology import load_topology

    with open(load_topology("default").path) as f:
        topo = json.load(f)  # its bundle is the shipped demo one, named "demo"
    change(topo)
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(topo))
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", str(path), "--out", str(out), "--policies", "dtoee",
               "--rates", "1", "--duration", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_replay_set_that_does_not_fit_the_bundle_fails_before_any_agent_starts(
        tmp_path, capsys):
    """Rule: a source's replay set is read against the bundle's stage-1 input before the run
    folder is made (the source exited only after every worker had started): one line naming
    replay_path, exit 2, no run folder; its path is relative to the topology file."""
    import numpy as np

    from agent.cli import main
    from agent.testbed.topology import load_topology

    np.savez(str(tmp_path / "mine.npz"), x=np.zeros((4, 3, 16, 16), np.float32),
             y=np.arange(4))
    with open(load_topology("default").path) as f:
        topo = json.load(f)
    topo["agent"]["replay_path"] = "mine.npz"
    (tmp_path / "topo.json").write_text(json.dumps(topo))
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", str(tmp_path / "topo.json"), "--out", str(out),
               "--policies", "cf", "--rates", "1", "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "replay_path: %s has x (4, 3, 16, 16)" % (tmp_path / "mine.npz") in err[0]
    assert "stage 1 needs x (N,1,28,28)" in err[0] and not out.exists()


def test_a_policy_that_refuses_the_topologys_placement_fails_before_the_run_folder_exists(
        tmp_path, capsys):
    """Every agent's policy is made and configured as its start will before the run folder is
    made: DIMEE on the default chain (workers in no tier) is one line, exit 2, no run folder and
    no agent started (it used to start eight workers, then fail)."""
    from agent.cli import main

    out = tmp_path / "out"
    rc = main(["testbed", "--out", str(out), "--policies", "dimee", "--rates", "1",
               "--duration", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is in no tier" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [
    (["--topology", "dimee"], "--policies: the topology"),
    (["--topology", "dimee", "--policies", "dimee,cf"], "cf cannot run on it"),
    (["--topology", "mlci"], "last_stage: policy dtoee: DTO-EE models one stage per worker"),
    (["--mdi-mode", "admission", "--policies", "dtoee"], "--policies has no mdi-exit"),
])
def test_a_comparison_the_topology_cannot_make_fails_before_the_run_folder_exists(
        tmp_path, capsys, argv, message):
    """Rule: a topology with terminal tiers runs only per-task policies, as plan and simulate
    require (CF ran there and answered every task at the first tier); a policy a worker's
    stages do not suit fails here (DTO-EE, the default, failed on mlci after the agents had
    started); --mdi-mode with no mdi-exit policy is refused (it used to print an "admitted"
    rate for DTO-EE). One line, exit 2, no run folder."""
    from agent.cli import main

    out = tmp_path / "out"
    rc = main(["testbed", "--out", str(out), "--rates", "1", "--duration", "1"] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_testbed_help_prints(capsys):
    """``edge-agent testbed --help`` lists every option (help texts with % signs included)."""
    from agent.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["testbed", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for opt in ("--topology", "--policies", "--rates", "--duration", "--json", "--out"):
        assert opt in out


def test_free_ports_are_distinct_below_the_ephemeral_range_and_never_shared_between_processes():
    """Ports come from below the kernel's ephemeral range (where no outgoing connection or
    bind(0) takes one), are distinct, and a second process running meanwhile gets none of
    this process's ports."""
    import os
    import subprocess
    import sys

    from agent.testbed.ports import free_ports

    mine = free_ports(30)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", "from agent.testbed.ports import free_ports; "
                          "print(free_ports(30))"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=root))
    other = json.loads(out.stdout)
    assert len(set(mine)) == 30 and len(set(other)) == 30
    assert not set(mine) & set(other)
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_start = int(f.read().split()[0])
    assert max(mine + other) < ephemeral_start


def _time_wait_on(port: int) -> None:
    """Leave a connection in TIME_WAIT on ``port``: the listening side closes it first."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = listener.accept()
            conn.close()
            client.recv(1)  # the FIN has come: the listening side's close was first


def test_free_ports_skip_a_port_a_connection_left_in_time_wait():
    """A port with a connection in TIME_WAIT on it (a plain listener cannot bind over it, as
    a process that held this block before may leave one for a minute) is skipped: the next
    port of the block is handed out instead."""
    from agent.testbed import ports

    ports.free_ports(1)  # this process holds a block now
    waiting = ports._next[0]
    _time_wait_on(waiting)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", waiting))  # what a plain listener meets on that port
    assert waiting not in ports.free_ports(3)


def test_free_ports_skip_a_port_held_on_ipv6_loopback_only():
    """A port something listens on at ``[::1]`` alone (free on 127.0.0.1) is skipped: a
    dual-stack or IPv6 bind of it would fail."""
    from agent.testbed import ports

    ports.free_ports(1)
    held = ports._next[0]
    try:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        v6.bind(("::1", held))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with v6:
        v6.listen(1)
        assert held not in ports.free_ports(3)
