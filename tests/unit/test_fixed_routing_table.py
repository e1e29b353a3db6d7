"""``fixed``'s ``routing`` knob in its two forms: a node config's own row ``{successor:
weight}``, and a topology's per-node table ``{node: {successor: weight}}`` of which each agent
takes its own row. A topology's flat row is refused when the file is read (every node gets the
table, and no two stages share successors), pointing at the per-node form; rows are checked
against the topology's links before a testbed run or a render, naming the file, the field and
the node; ``fleet render --policy fixed`` writes each device its own row. Real topology files,
node configs and the demo bundle; no agent is started and nothing is timed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agent.cli import main
from agent.config.node import dump_config, load_config
from agent.errors import UsageError
from agent.node.build import build_view, configured_policy
from agent.policies.api import NodeView
from agent.policies.fixed import node_knobs, parse_fixed_knobs
from agent.policies.fixed_agent import FixedWeightsPolicy
from agent.policies.registry import make_policy
from agent.testbed.local import node_configs
from agent.testbed.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

NODES = ["cam1", "cam2", "w1a", "w1b", "w2a", "w2b", "w3a", "w3b", "w4a", "w4b"]
# a row per node that sends on, in the default topology (w1b, w2b, w3b and w4* have none)
ROWS = {"cam1": {"w1a": 3.0, "w1b": 1.0}, "cam2": {"w1a": 0.0, "w1b": 1.0},
        "w1a": {"w2a": 2.0, "w2b": 1.0}, "w2a": {"w3a": 1.0}, "w3a": {"w4a": 1.0, "w4b": 5.0}}


def _view(node_id="s1", successors=("a", "b")):
    return NodeView(node_id=node_id, role="source", stage=0, num_stages=2,
                    stage_flops=(1e6, 2e6), stage_input_bytes=(1000.0, 500.0),
                    exit_stages=(1,), successors=successors, predecessors=(),
                    link_rate_bytes_s={s: 1e6 for s in successors}, alive=set(successors))


def _topology(tmp_path, routing, name="topo.json"):
    """The shipped default topology with ``knobs.fixed.routing = routing``, as a file."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    obj["knobs"]["fixed"] = {"routing": routing}
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _inventory(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("".join("%s 10.0.0.%d\n" % (n, 10 + i) for i, n in enumerate(NODES)))
    return str(path)


def _render(tmp_path, topology, policy="fixed"):
    return main(["fleet", "render", "--topology", topology, "--inventory", _inventory(tmp_path),
                 "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root"),
                 "--policy", policy])


def test_the_public_names_stay_importable_from_the_policy_interface():
    """Rule: ``FixedWeightsPolicy`` and ``parse_fixed_knobs`` are still ``agent.policies.api``'s
    names, and the registry's ``fixed`` is that class."""
    assert type(make_policy("fixed", {}, {})) is FixedWeightsPolicy
    assert parse_fixed_knobs({"routing": {"a": 1}}) == {"a": 1.0}


def test_a_node_configs_own_row_works_as_before():
    """Rule: a node config's flat row routes by its weights and reports them; a weight for a
    node that is no successor is refused at start-up with the same words as before."""
    p = make_policy("fixed", {}, {"routing": {"a": 3, "b": 0}})
    p.configure(SimpleNamespace(), _view())
    assert p.weights(_view()) == {"a": 3.0, "b": 0.0} and p.routing() == {"a": 3.0, "b": 0.0}
    p = make_policy("fixed", {}, {"routing": {"a": 1, "w9": 1}})
    with pytest.raises(UsageError, match=r"^policy_knobs.routing: w9 is no successor of this "
                       r"node \(its successors: a, b\)$"):
        p.configure(SimpleNamespace(), _view())


def test_a_per_node_table_gives_each_node_its_own_row_and_the_others_uniform_routing():
    """Rule: with ``{node: {successor: weight}}`` a node routes by its own row (reported by
    ``routing()``) and ignores the other rows, which name peers it does not have; a node
    without a row routes uniformly (every successor weighs 1)."""
    table = {"routing": {"s1": {"a": 3, "b": 1}, "s2": {"c": 1}}}
    p = make_policy("fixed", {}, table)
    p.configure(SimpleNamespace(), _view("s1"))
    assert p.weights(_view("s1")) == {"a": 3.0, "b": 1.0} and p.routing() == {"a": 3.0, "b": 1.0}
    q = make_policy("fixed", {}, table)
    q.configure(SimpleNamespace(), _view("s3"))
    assert q.weights(_view("s3")) == {"a": 1.0, "b": 1.0} and q.routing() == {}


def test_a_nodes_own_row_naming_no_successor_is_a_start_up_fault_naming_its_row():
    """Rule: in a per-node table only the node's own row is checked against its successors,
    and a wrong one names ``policy_knobs.routing.<node>``."""
    p = make_policy("fixed", {}, {"routing": {"s1": {"a": 1, "w9": 2}}})
    with pytest.raises(UsageError, match=r"^policy_knobs.routing.s1: w9 is no successor of "
                       r"this node \(its successors: a, b\)$"):
        p.configure(SimpleNamespace(), _view("s1"))


@pytest.mark.parametrize("routing", [{"a": 1, "s2": {"b": 1}}, {"s1": {"a": -1}},
                                     {"s1": {"a": True}}, {"a": -1}, 5])
def test_a_routing_table_of_neither_form_is_refused_naming_the_field(routing):
    """Rule: the two forms mixed, a negative or non-number weight, or no table at all is a
    config error naming ``policy_knobs.routing`` and both forms."""
    with pytest.raises(UsageError, match=r"^policy_knobs.routing: must be a table \{peer = "
                       r"weight >= 0\}, or one per node \{node = \{peer = weight >= 0\}\}"):
        make_policy("fixed", {}, {"routing": routing})


def test_a_topologys_flat_row_is_refused_pointing_at_the_per_node_form(tmp_path):
    """Rule: a topology's ``knobs.fixed.routing`` that is one flat row is refused when the
    file is read, whatever policy a run names: every agent would get it, and no two stages
    share successors (a last-stage worker has none), so it fitted no multi-stage topology."""
    path = _topology(tmp_path, {"w1a": 3, "w1b": 1})
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert str(err.value).startswith(
        '%s: knobs.fixed.routing: a topology gives each node its own row, {node: {successor: '
        'weight}}, e.g. {"NODE": {"w1a": 3, "w1b": 1}}' % path), err.value
    assert load_topology(_topology(tmp_path, ROWS)).knobs["fixed"] == {"routing": ROWS}


def test_every_testbed_agent_takes_its_own_row_of_the_topologys_table(tmp_path):
    """Rule: each agent of a testbed topology with a per-node table routes by its own row
    (its node config file holds its own row only, as a rendered device's does, and its policy
    is made and configured from it as its start makes it); a node with no row routes
    uniformly."""
    topo = load_topology(_topology(tmp_path, ROWS))
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    cfgs = node_configs(topo, bundle.path, "fixed", 1.0, 1.0, str(tmp_path / "run"))
    for n, cfg in cfgs.items():
        toml = tmp_path / (n + ".toml")  # as the testbed hands it to the agent
        toml.write_text(dump_config(cfg))
        cfg = load_config(str(toml))
        assert cfg.policy_knobs == ({"routing": ROWS[n]} if n in ROWS else {}), n
        policy = configured_policy(cfg, bundle, build_view(cfg, bundle, None))
        assert policy.routing() == ROWS.get(n, {}), n


@pytest.mark.parametrize("routing,field,what", [
    (dict(ROWS, w1a={"w3a": 1.0}), "knobs.fixed.routing.w1a",
     "w3a is no successor of w1a (its successors: w2a, w2b)"),
    ({"w4a": {"w1a": 1.0}}, "knobs.fixed.routing.w4a",
     "w1a is no successor of w4a (its successors: none)"),
    ({"cam9": {"w1a": 1.0}}, "knobs.fixed.routing.cam9",
     "no such node in the topology (nodes that send on: cam1, cam2, w1a, w1b, w2a, w2b, w3a, "
     "w3b)"),
])
def test_a_wrong_row_fails_testbed_and_render_naming_the_file_field_and_node(
        tmp_path, capsys, routing, field, what):
    """Rule: a row naming a node that is no successor of its node, or a row of no node of the
    topology, is one line naming the file, ``knobs.fixed.routing.<node>`` and the nodes, exit
    2: in ``testbed`` before the run folder exists, and in ``fleet render`` before anything
    is written."""
    path = _topology(tmp_path, routing)
    out = tmp_path / "tb"
    rc = main(["testbed", "--topology", path, "--policies", "fixed", "--rates", "1",
               "--duration", "1", "--out", str(out), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].endswith("error: %s: %s: %s" % (path, field, what))
    assert not out.exists()
    assert _render(tmp_path, path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("error: %s: %s: %s" % (path, field, what)), err
    assert not (tmp_path / "out").exists()


def test_fleet_render_writes_each_device_its_own_row(tmp_path, capsys):
    """Rule: ``fleet render --policy fixed`` writes each node config its own row as a flat
    ``routing`` (a node without one gets none: uniform), and the drive topology keeps the
    per-node table; with another policy the node configs carry no ``fixed`` knobs."""
    path = _topology(tmp_path, ROWS)
    assert _render(tmp_path, path) == 0
    etc = tmp_path / "out" / "devices"
    for n in NODES:
        cfg = load_config(str(etc / n / "etc" / "edge-agent" / (n + ".toml")))
        assert cfg.policy == "fixed"
        assert cfg.policy_knobs == ({"routing": ROWS[n]} if n in ROWS else {}), n
    drive = json.loads((tmp_path / "out" / "testbed.json").read_text())
    assert drive["knobs"]["fixed"] == {"routing": ROWS}
    capsys.readouterr()
    assert _render(tmp_path, path, "cf") == 0
    cfg = load_config(str(etc / "cam1" / "etc" / "edge-agent" / "cam1.toml"))
    assert cfg.policy == "cf" and cfg.policy_knobs == {}


def test_node_knobs_cuts_a_nodes_own_row_and_leaves_the_rest():
    """Rule: ``node_knobs`` gives a node its own row of a ``fixed`` per-node table (none
    without a row), and leaves a flat row and other policies' tables as they are."""
    table = {"routing": ROWS}
    assert node_knobs("fixed", table, "cam1") == {"routing": ROWS["cam1"]}
    assert node_knobs("fixed", table, "w4a") == {}
    assert node_knobs("fixed", {"routing": {"a": 1}}, "cam1") == {"routing": {"a": 1}}
    assert node_knobs("dtoee", {"step": "joint"}, "cam1") == {"step": "joint"}
