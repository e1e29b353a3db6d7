"""Several agents whose limits come from one place (a testbed topology's ``agent`` table):
the start-up check names the agent and the value that decide what to set (the largest need),
not the first agent checked, so setting that value passes every agent
(``agent.node.limits.largest_need``). Real node configs of the demo bundle, nothing started."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.node.limits import LimitError, largest_need, task_header_bytes
from agent.testbed.prerun import check_node_configs
from agent.testbed.topology import load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

DEMO = load_bundle(DEMO_BUNDLE_DIR)  # stage inputs 3136, 6272, 3136, 6272 bytes
STAGE2 = DEMO.stage(2)
# the largest message any agent below receives: a stage-2 task (w2's)
NEED2 = int(STAGE2.input_bytes) + task_header_bytes(STAGE2.input_shape, STAGE2.input_dtype,
                                                    DEMO.num_classes)


def _topology(tmp_path, agent):
    """A demo-bundle topology file whose agents all get the ``agent`` table: w1 receives
    stage-1 tasks (the smallest), w2 stage 2 (the largest), w3 stages 3-4."""
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({
        "bundle": "demo", "agent": agent, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}, {"id": "w2", "stage": 2},
                    {"id": "w3", "stage": 3, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}, {"from": "w1", "to": "w2"},
                  {"from": "w2", "to": "w3"}]}), encoding="utf-8")
    return str(path)


def test_the_testbed_names_the_largest_need_not_the_first_agent_below_it(tmp_path, capsys):
    """Rule: a topology-wide max_message_bytes below every worker's need is refused in one line
    naming the worker with the largest need (w2, stage 2) and that value, not w1 (checked
    first, the smallest need); exit 2, no run folder."""
    out = tmp_path / "out"
    status = main(["testbed", "--topology", _topology(tmp_path, {"max_message_bytes": 1024}),
                   "--policies", "cf", "--rates", "1", "--duration", "1", "--out", str(out),
                   "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert "below the largest message worker w2 receives (a stage-2 task" in err[0], err
    assert "raise max_message_bytes to %d or more" % NEED2 in err[0], err
    assert "(the largest need: 3 agents are below theirs)" in err[0] and "w1" not in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("field,low,named", [("max_message_bytes", 1024, NEED2),
                                             ("max_queue_bytes", 1024, 6272)])
def test_setting_the_named_value_passes_every_agent(tmp_path, field, low, named):
    """Rule: the value the refusal names is enough for every agent at once: the topology with
    that value passes the testbed's start-up check, one byte less is refused again."""
    topo = load_topology(_topology(tmp_path, {field: low}))
    with pytest.raises(LimitError) as got:
        check_node_configs(topo, DEMO, ["cf"], [1.0], 1.0, 1)
    assert got.value.field == field and got.value.need_bytes == named, got.value
    assert "raise %s to %d or more" % (field, named) in str(got.value), got.value
    check_node_configs(load_topology(_topology(tmp_path, {field: named})), DEMO, ["cf"], [1.0],
                       1.0, 1)
    with pytest.raises(LimitError):
        check_node_configs(load_topology(_topology(tmp_path, {field: named - 1})), DEMO, ["cf"],
                           [1.0], 1.0, 1)


def test_a_message_limit_comes_before_a_queue_limit_and_equal_needs_keep_the_first():
    """Rule: largest_need says a max_message_bytes error before a max_queue_bytes one however
    large the latter's need (each agent is checked for the former first), keeps the first of
    equal needs, and leaves a lone error as it is."""
    queue = LimitError("q", "fix q", "max_queue_bytes", 10 ** 9)
    small = LimitError("small", "fix s", "max_message_bytes", 100)
    big = LimitError("big", "fix b", "max_message_bytes", 200)
    tie = LimitError("tie", "fix t", "max_message_bytes", 200)
    got = largest_need([queue, small, big, tie])
    assert str(got) == "big (the largest need: 3 agents are below theirs)", got
    assert (got.fix, got.field, got.need_bytes) == ("fix b", "max_message_bytes", 200)
    assert largest_need([queue]) is queue
