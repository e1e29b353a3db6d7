"""MDI-Exit topologies in the testbed: workers holding several stages, shipped presets by name."""

import copy

import pytest

from agent.commands.testbed import with_mdi_mode
from agent.testbed.local import node_configs
from agent.testbed.topology import TopologyError, load_topology, parse_topology, shipped_presets
from agent.testbed.topology_bundle import StageInfo, capacity_tasks_s

STAGES = [StageInfo(1e5, 1000.0, True), StageInfo(3e5, 2000.0, False)]
TWO_NODE = {
    "sources": [{"id": "cam", "share": 1.0}],
    "workers": [{"id": "n1", "stage": 1, "last_stage": 2, "emulate_capacity_flops": 4e6},
                {"id": "n2", "stage": 1, "last_stage": 2, "emulate_capacity_flops": 4e6}],
    "links": [{"from": "cam", "to": "n1"}, {"from": "n1", "to": "n2", "rate_bytes_s": 1e6},
              {"from": "n2", "to": "n1", "rate_bytes_s": 1e6}],
}


def test_workers_holding_every_stage_may_link_both_ways():
    """A node holding stages 1..H may send to another such node and back (mesh links)."""
    topo = parse_topology(TWO_NODE)
    assert topo.num_stages == 2 and topo.multi_stage
    assert [w.stages for w in topo.workers] == [(1, 2), (1, 2)]
    assert topo.last_stage_of("n2") == 2 and topo.last_stage_of("cam") == 0


@pytest.mark.parametrize("change, message", [
    (lambda t: t["workers"][0].update(last_stage=0) or t["workers"][1].update(last_stage=0),
     r"links go from stage h to h\+1"),
    (lambda t: t["workers"][0].update(stage=2, last_stage=1), r"workers\[0\]\.last_stage"),
    (lambda t: t["workers"][1].update(last_stage="2"), r"workers\[1\]\.last_stage"),
])
def test_last_stage_errors_name_the_field(change, message):
    """A last_stage below stage or not an integer, or a stage-1 -> stage-1 link between
    one-stage workers, is a one-line error naming the field."""
    obj = copy.deepcopy(TWO_NODE)
    change(obj)
    with pytest.raises(TopologyError, match=message):
        parse_topology(obj)


def test_capacity_of_nodes_holding_every_stage_is_their_sum_over_a_whole_task():
    """Nodes running every stage of a task: capacity = sum(mu) / (FLOP of a task that runs
    stage 2 with probability I_1)."""
    topo = parse_topology(TWO_NODE)
    assert capacity_tasks_s(topo, STAGES, [0.5, 1.0]) == pytest.approx(8e6 / (1e5 + 0.5 * 3e5))


def test_node_configs_carry_last_stage_to_the_worker_and_its_peers(tmp_path):
    """Generated configs: each node holds stages 1..2, knows its peer holds 1..2 (a successor),
    and lists each neighbour once although it is both successor and predecessor."""
    topo = parse_topology(TWO_NODE)
    cfgs = node_configs(topo, "demo-unused", "mdi-exit", 5.0, 10.0, str(tmp_path))
    n1 = cfgs["n1"]
    assert n1.stages == (1, 2)
    assert sorted(p.id for p in n1.peers) == ["cam", "n2"]
    assert [p.stages for p in n1.successors] == [(1, 2)]
    assert [p.id for p in cfgs["cam"].successors] == ["n1"]


def test_shipped_mdi_presets_load_by_name_with_noee_and_mode_variants():
    """The paper's topologies ship as mdi-* presets: every node holds all 4 demo stages, the
    data sits at n1; <name>-noee turns early exit off; --mdi-mode sets Alg. 3 / Alg. 4."""
    names = shipped_presets()
    for n in ("mdi-local", "mdi-2-node", "mdi-3-node-mesh", "mdi-3-node-circular",
              "mdi-5-node-mesh"):
        assert n in names
        topo = load_topology(n)
        assert all(w.stages == (1, 4) for w in topo.workers)
        assert [l.dst for l in topo.successors("cam")] == ["n1"]
    assert len(load_topology("mdi-5-node-mesh").workers) == 5
    assert load_topology("mdi-2-node-noee").knobs["mdi-exit"]["early_exit"] is False
    adm = with_mdi_mode(load_topology("mdi-2-node"), "admission").knobs["mdi-exit"]
    assert adm["admission_control"] and not adm["threshold_adaptation"]
    ada = with_mdi_mode(load_topology("mdi-2-node"), "adapt").knobs["mdi-exit"]
    assert ada["threshold_adaptation"] and not ada["admission_control"]


def test_unknown_preset_name_lists_the_shipped_ones():
    """A --topology that is neither a file nor a shipped name fails with the list of names."""
    with pytest.raises(TopologyError, match="mdi-2-node"):
        load_topology("mdi-7-node")


@pytest.mark.parametrize("name", ["dimee-noee", "default-noee", "mlci-noee"])
def test_noee_is_refused_on_a_topology_that_is_not_mdi(name, tmp_path, capsys):
    """Rule: -noee turns off the mdi-exit policy's early exit, so only the mdi-* presets take
    it; on another shipped one it is one line naming those that do (it changed nothing and
    labelled the runs as if it had), and nothing runs."""
    from agent.cli import main

    rc = main(["testbed", "--topology", name, "--policies", "cf", "--rates", "5",
               "--duration", "1", "--no-plots", "--out", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["edge-agent testbed: error: --topology: %r: -noee turns the "
                               "mdi-exit policy's early exit off, so it applies to the mdi-* "
                               "topologies only (%s)" % (name, ", ".join(
                                   n + "-noee" for n in shipped_presets()
                                   if n.startswith("mdi-")))], err
    assert not (tmp_path / "tb").exists()


def test_an_unknown_name_says_which_presets_take_noee():
    """Rule: the error for an unknown --topology name says -noee goes with the mdi-* presets,
    as --help does, not with every shipped topology."""
    with pytest.raises(TopologyError, match=r"the mdi-\* ones also as <name>-noee"):
        load_topology("nope-noee")
    assert load_topology("mdi-local-noee").knobs["mdi-exit"]["early_exit"] is False


def test_served_rate_counts_answers_while_arrivals_last():
    """The admitted rate counts answers between the warm-up's end and the last arrival; a task
    answered after the load (a late re-issue) does not stretch the window."""
    from agent.testbed.local import served_rate

    recs = [{"created_mono": float(t), "finished_mono": t + 0.5, "status": "completed"}
            for t in range(0, 20)]
    recs.append({"created_mono": 19.0, "finished_mono": 60.0, "status": "completed"})
    # window [5, 19]: answers at 5.5 .. 18.5 -> 14 in 14 s
    assert served_rate(recs, 5.0) == pytest.approx(1.0)
    assert served_rate(recs[:6], 5.0) is None  # window under 1 s
