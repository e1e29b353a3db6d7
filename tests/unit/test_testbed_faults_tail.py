"""A fault still on when the load ends is refused before the run, as one due after it is.

The testbed ends every fault still on once the run's tasks have drained (``FaultRunner.finish``),
so such a fault's tail would be cut short at a time nobody chose, and no task would be created
after it to show the recovery. A kill without a duration (down for good) and a restart (over
at once) have no tail."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.faults import Fault, check_faults
from agent.testbed.topology import DEFAULT_TOPOLOGY


def _topology(tmp_path, faults):
    """The default topology with a 2.5 s warm-up and ``faults`` (target "WORKER": its first
    worker); (its file, that worker's id)."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    worker = obj["workers"][0]["id"]
    obj["warmup_s"] = 2.5
    obj["faults"] = [dict(f, target=worker if f["target"] == "WORKER" else f["target"])
                     for f in faults]
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(obj))
    return str(path), worker


def test_a_fault_lasting_past_the_loads_end_is_refused_naming_it_and_the_end(tmp_path, capsys):
    """Rule: a fault that starts during the load but whose duration runs past its end (warm-up
    + --duration) is one line naming the fault, the load's end and the longest duration that
    fits, before any run folder or agent is made."""
    path, worker = _topology(tmp_path, [{"at": 4, "duration": 10, "kind": "kill",
                                         "target": "WORKER"}])
    rc = main(["testbed", "--topology", path, "--policies", "cf", "--rates", "5",
               "--duration", "3", "--no-plots", "--out", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        "edge-agent testbed: error: faults: kill %s at 4s for 10s is still on when the load "
        "ends, at 5.5 s (warm-up 2.5 s + --duration 3 s): give it a duration of at most 1.5 s, "
        "or a longer --duration" % worker], err
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("kind", ["kill", "stop"])
def test_a_fault_ending_exactly_at_the_loads_end_is_accepted(kind):
    """Rule: the check is on the end, not the start: a fault ending when the load ends runs."""
    check_faults([Fault(4.0, 1.5, kind, "w1")], "loopback", 2.5, 3.0)
    with pytest.raises(UsageError, match="still on when the load ends"):
        check_faults([Fault(4.0, 1.6, kind, "w1")], "loopback", 2.5, 3.0)


def test_a_kill_for_good_and_a_restart_have_no_tail_to_refuse():
    """Rule: a kill without a duration (down until the load's end) and a restart (its duration
    means nothing: it is over at once) are accepted whenever they start during the load."""
    check_faults([Fault(5.0, 0.0, "kill", "w1"), Fault(5.0, 30.0, "restart", "w2")],
                 "loopback", 2.5, 3.0)


def test_a_network_fault_lasting_past_the_end_is_refused_under_netns_too():
    """Rule: the tail check holds in both network modes (netns: the loss would be undone when
    the drain ends, whenever that is)."""
    with pytest.raises(UsageError, match=r"faults: loss 0\.1 \* at 5s for 2s is still on"):
        check_faults([Fault(5.0, 2.0, "loss", "*", loss=0.1)], "netns", 2.5, 3.0)


def test_a_netns_link_fault_inside_one_device_is_refused_by_the_network_plan():
    """Rule: a link fault between two agents of one device (its loopback, which the kernel
    cannot shape) is refused when the netns plan is made, before a run folder or namespace
    exists; a process fault on the same agents is not."""
    from agent.commands.testbed import network_plan
    from agent.testbed.topology import parse_topology

    obj = {"sources": [{"id": "cam", "share": 1.0, "host": "box"}],
           "workers": [{"id": "w1", "stage": 1, "host": "box"}] + [
               {"id": "w%d" % h, "stage": h} for h in (2, 3, 4)],
           "links": [{"from": "cam", "to": "w1"}] + [
               {"from": "w%d" % h, "to": "w%d" % (h + 1)} for h in (1, 2, 3)]}
    network_plan(parse_topology(dict(obj, faults=[
        {"at": 1, "duration": 1, "kind": "stop", "target": "w1"}])))
    with pytest.raises(UsageError, match="cam and w1 share device 'box'"):
        network_plan(parse_topology(dict(obj, faults=[
            {"at": 1, "duration": 1, "kind": "link-down", "target": "cam->w1"}])))
