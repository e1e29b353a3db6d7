"""MDI-Exit in a node's first moments: a successor not heard from yet (``NodeView.joining``)
is a candidate of Alg. 2 with nothing queued, and a task it would take waits for its first
heartbeat instead of going to whichever successor was heard first, as the other policies'
tasks wait (``AgentPolicy.choose_successor``). Once its silence limit has passed it is no
longer joining and the task goes to those alive."""

from agent.policies.api import NodeView, TaskInfo
from agent.policies.registry import make_policy

NBYTES = 3136


def _source_view(alive, joining):
    """A source whose two stage-1 workers sit behind a fast link (``near``, 1.6 MB/s) and a
    40x slower one (``far``), nothing queued at either."""
    peers = ("near", "far")
    return NodeView(node_id="cam", role="source", stage=0, num_stages=2,
                    peer_stages={m: (1, 1) for m in peers}, stage_flops=(1e6, 1e6),
                    stage_input_bytes=(NBYTES, NBYTES), exit_stages=(1,), successors=peers,
                    predecessors=(), link_rate_bytes_s={"near": 1.6e6, "far": 3.9e4},
                    output_queue=0, alive=set(alive), joining=set(joining),
                    peer_state={m: {"input_queue": 0, "service_time_s": 0.01}
                                for m in alive})


def test_a_task_for_a_joining_successor_waits_and_the_far_one_is_not_used_meanwhile():
    """Only ``far`` heard yet, ``near`` joining: the task waits (None), ``far`` gets nothing;
    once ``near`` is heard it takes the task."""
    p = make_policy("mdi-exit", {1: 0.8}, {}, seed=0)
    task = TaskInfo("t1", 1, NBYTES)
    assert all(p.choose_successor(task, _source_view({"far"}, {"near"})) is None
               for _ in range(20))
    assert p.routing() == {}  # nothing counted as sent meanwhile
    assert p.choose_successor(task, _source_view({"far", "near"}, set())) == "near"


def test_a_successor_past_its_silence_limit_is_not_waited_for():
    """``near`` never heard and no longer joining (its silence limit from the start passed):
    the task goes to ``far``, the one alive; a re-sent task excluding the joining one too."""
    task = TaskInfo("t1", 1, NBYTES)
    p = make_policy("mdi-exit", {1: 0.8}, {}, seed=0)
    assert p.choose_successor(task, _source_view({"far"}, set())) == "far"
    p = make_policy("mdi-exit", {1: 0.8}, {}, seed=0)  # nothing counted as sent to far yet
    assert p.choose_successor(task, _source_view({"far"}, {"near"}), exclude=("near",)) == "far"
