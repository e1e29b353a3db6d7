"""``round-robin``: a toy policy, complete in one module, added to the registry at run time.

Every offloader hands its tasks to its successors in turn (task 1 to the first, task 2 to the
second, ...), exit thresholds stay as configured. It has the three adapters a policy can have:
``RoundRobinPolicy`` runs on a node, ``RoundRobinSimPolicy`` in the simulator, ``plan_round_robin``
answers ``edge-agent plan`` (its long-run split: uniform). ``docs/adding-a-policy.md`` walks
through it; ``register()`` adds its row.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies import registry
from agent.policies.api import AgentPolicy, NodeView, TaskInfo
from agent.policies.model import compile_network, make_result, uniform_routing
from agent.policies.sim_api import SimPolicy

NAME = "round-robin"


def parse_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                error: type = UsageError) -> int:
    """The one knob, ``start``: which successor (0-based, in config order) gets the first task."""
    f = Fields(knobs, where, error)
    f.reject_unknown(("start",))
    return f.int("start", 0, lo=0)


class Turns:
    """Whose turn it is, per offloader: the one piece of state both adapters share."""

    def __init__(self, start: int = 0):
        self.start = start
        self.next: Dict[str, int] = {}
        self.sent: Dict[str, Dict[str, int]] = {}  # offloader -> successor -> tasks handed

    def pick(self, node: str, candidates: Sequence[str]) -> str:
        """The successor whose turn it is among ``candidates``; advances the turn."""
        i = self.next.get(node, self.start)
        self.next[node] = i + 1
        dest = candidates[i % len(candidates)]
        row = self.sent.setdefault(node, {})
        row[dest] = row.get(dest, 0) + 1
        return dest


class RoundRobinPolicy(AgentPolicy):
    """On a node: alive successors serving the task's stage, in turn (fixed thresholds)."""

    name = NAME

    def __init__(self, thresholds, knobs, seed=0):
        super().__init__(thresholds, knobs, seed)
        self.turns = Turns(parse_knobs(self.knobs))

    def choose_successor(self, task: TaskInfo, view: NodeView,
                         exclude: Sequence[str] = ()) -> Optional[str]:
        alive = view.alive_successors(task.stage)
        if not alive:
            return None  # keep the task; the node asks again
        return self.turns.pick(view.node_id, [s for s in alive if s not in exclude] or alive)

    def routing(self) -> Dict[str, float]:
        """The split so far (shares of the tasks handed on), reported in stats.json."""
        sent = next(iter(self.turns.sent.values()), {})
        total = sum(sent.values())
        return {s: n / total for s, n in sent.items()} if total else {}


class RoundRobinSimPolicy(SimPolicy):
    """In the simulator: the same turns, per task (``per_task``), over each node's successors."""

    per_task = True

    def __init__(self, name: str = NAME):
        self.name = name
        self.turns = Turns()

    def route(self, node: str, task: int, view: Any) -> Optional[str]:
        succ = view.succ[view.index[node]]
        return self.turns.pick(node, [view.names[j] for j in succ])


def plan_round_robin(scenario, request) -> Any:
    """``plan``: in the long run every successor gets the same share (p_ij = 1/|L_i|), under
    the scenario's starting threshold (knob ``initial_threshold``) at every exit, which it
    never tunes."""
    net = compile_network(scenario)
    th = None  # no exit profile: the scenario's remaining work is used as given
    if scenario.exit_profile is not None:  # make_result needs a threshold per exit stage
        th = {h: request.params.initial_threshold
              for h in scenario.exit_profile.early_exit_stages}
    return make_result(NAME, scenario, net, uniform_routing(net), th, 0, True)


ROW = registry.PolicyRow(
    NAME, "toy: successors in turn, fixed thresholds",
    agent=RoundRobinPolicy, agent_knobs=parse_knobs,
    sim=lambda name, rounds, options: RoundRobinSimPolicy(name),
    planner=plan_round_robin)


def register() -> None:
    """Add the ``round-robin`` row to the registry (idempotent)."""
    registry.register(ROW, replace=True)
