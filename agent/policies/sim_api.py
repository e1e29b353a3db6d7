"""The simulator's policy hook: what a policy is asked, and when (contract in ``agent.sim``).

``SimPolicy`` is the base class with the do-nothing defaults; ``FixedPolicy`` keeps one routing
table and threshold setting for the whole run; ``PlannerPolicy`` re-plans every slot by calling
a pure planning function (DTO-EE, CF, BF, NGTO, GA from ``agent.policies``), whose
``PolicyResult`` ``decision_from_result`` turns into the slot's ``Decision``. Which class serves
which name is ``agent.policies.registry``'s table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

from agent.policies.setting import Scenario, ScenarioError

Routing = Mapping[str, Mapping[str, float]]  # {node: {successor: probability}}


@dataclass(frozen=True)
class Decision:
    """What a policy settles on in a slot's configuration phase."""

    routing: Optional[Routing] = None  # {node: {successor: p}}; None keeps the table in force
    thresholds: Optional[Mapping[int, float]] = None  # {exit stage: c}; None keeps the current ones
    rounds: int = 0  # configuration rounds spent; the decision applies after rounds * round delay
    info: Mapping[str, Any] = field(default_factory=dict)  # numbers for the report (model delay...)


@dataclass(frozen=True)
class SlotView:
    """What a policy sees at a slot boundary."""

    slot: int  # 0-based slot index
    now_s: float  # simulated time of the boundary
    scenario: Scenario  # this slot's setting: source rates and capacities after dynamic changes
    previous: Optional[Decision]  # the decision in force until the new one applies (warm start)
    seed: int = 0  # the run's seed (SimConfig.seed), for a policy's own random draws


class SimPolicy:
    """Base policy: keeps uniform routing and thresholds of 1.0; override what you need.

    Class attributes switch on the per-task hooks, so that a table-driven policy costs the event
    loop nothing extra:

    - ``per_task``: the engine calls ``route`` for every task leaving a node instead of sampling
      the routing table.
    - ``per_node_thresholds``: the engine calls ``threshold`` at every exit check instead of
      using the slot's ``{stage: c}``.
    - ``admission``: sources call ``admit`` for every new task; a refused task is recorded as
      rejected (never silently dropped).
    - ``tick_s``: the engine calls ``on_tick`` every ``tick_s`` simulated seconds and then
      re-offers every held task (``route`` returned None) to ``route``, oldest first.
    - ``per_task_exit``: after a task is served at a stage with a head the engine calls
      ``on_head`` instead of comparing the confidence with a threshold (also at the last stage
      and at terminal workers, where the task is answered whatever it returns).
    - ``per_task_answer``: at every answer the engine calls ``answer_correct``; a bool there
      replaces the profile's correctness at the exit head (an ensemble's answer).
    - ``tiered``: the policy handles terminal workers and restart links; the engine refuses a
      scenario with either for every other policy (``refuse_tiers``).
    - ``sample_rows``: the exit-profile rows the tasks carry when ``SimConfig.sample_rows``
      does not say (None = all; "test" for a policy that learns on the validation rows).
    """

    name = "policy"
    per_task = False
    per_node_thresholds = False
    admission = False
    tick_s: Optional[float] = None
    per_task_exit = False
    per_task_answer = False
    tiered = False
    sample_rows: Optional[str] = None

    def start_slot(self, view: SlotView) -> Decision:
        """Called at every slot boundary; the returned decision applies after its rounds."""
        return Decision()

    def route(self, node: str, task: int, view: Any) -> Optional[str]:
        """Successor for ``task`` leaving ``node`` (only when ``per_task``); None holds it."""
        raise NotImplementedError

    def threshold(self, node: str, stage: int, view: Any) -> float:
        """Exit threshold at ``node`` for ``stage`` (only when ``per_node_thresholds``)."""
        raise NotImplementedError

    def admit(self, source: str, task: int, view: Any) -> bool:
        """Whether ``source`` accepts a new task (only when ``admission``)."""
        return True

    def on_tick(self, view: Any) -> None:
        """Periodic hook (only when ``tick_s``): publish queue state, adapt thresholds or rates."""

    def on_head(self, node: str, task: int, stage: int, view: Any) -> bool:
        """Whether ``task`` is answered at ``node``'s head of ``stage`` (only when
        ``per_task_exit``); False forwards it through ``route``."""
        raise NotImplementedError

    def answer_correct(self, node: str, task: int, stage: int, view: Any) -> Optional[bool]:
        """Whether the answer ``task`` gets at ``node`` is right (only when ``per_task_answer``);
        None keeps the profile's correctness at ``stage``'s head."""
        return None

    def extra_summary(self, result: Any, scenario: Scenario) -> Dict[str, Any]:
        """The policy's own numbers for the report after a run (e.g. DIMEE's cost per task)."""
        return {}


class TieredSimPolicy(SimPolicy):
    """Base of the per-task policies on tiers (DIMEE, MLCI): knobs from the scenario's
    ``knobs[knob_key]`` with ``overrides`` on top; tasks on the test rows, since they learn on
    the validation rows."""

    per_task = True
    tiered = True
    sample_rows: Optional[str] = "test"
    knob_key = ""

    def __init__(self, name: str, overrides: Optional[Mapping[str, Any]] = None):
        self.name = name
        self._overrides = dict(overrides or {})

    def knobs(self, scenario: Scenario) -> Dict[str, Any]:
        """The policy's knob table: the scenario's, then the overrides."""
        knobs = dict(scenario.knobs.get(self.knob_key) or {})
        knobs.update(self._overrides)
        return knobs


def measured(result: Any) -> Any:
    """Mask of a run's completed tasks created in the summary window (warm-up's end to the end
    of arrivals), as ``SimResult.summary`` counts them."""
    c = result.created_s
    return ((result.status == 1) & (c >= result.config.warmup_s)
            & (c < result.config.duration_s))


TIERS_NEED_PER_TASK = ("scenario: restart links / terminal workers need a per-task policy "
                       "(dimee, mlci)")


def refuse_tiers(scenario: Scenario, policy: str) -> None:
    """Raise the one-line ``ScenarioError`` when ``scenario`` has restart links or terminal
    workers short of the last stage: planners (DTO-EE's network model, CF, BF, NGTO, GA, the
    optimum) and MDI-Exit assume every link goes from stage h to h+1 and every worker short of
    the last stage can pass a task on (a terminal worker of the last stage is an ordinary one)."""
    h = scenario.num_stages
    if any(w.terminal and w.stage < h for w in scenario.workers) or \
            any(l.restart for l in scenario.links):
        raise ScenarioError("%s; %s cannot run on it" % (TIERS_NEED_PER_TASK, policy))


class FixedPolicy(SimPolicy):
    """One routing table and threshold setting for the whole run (decided at time 0)."""

    def __init__(self, routing: Optional[Routing], thresholds: Optional[Mapping[int, float]] = None,
                 name: str = "fixed", rounds: int = 0):
        self.name = name
        self._decision = Decision(routing, thresholds, rounds)

    def start_slot(self, view: SlotView) -> Decision:
        return self._decision if view.slot == 0 else Decision()


Planner = Callable[[Scenario, Optional[Decision]], Decision]


def decision_from_result(result: Any, rounds: Optional[int] = None,
                         thresholds: Optional[Mapping[int, float]] = None) -> Decision:
    """A planner's ``PolicyResult`` as a slot decision; ``rounds``/``thresholds`` override its
    own (e.g. NGTO's passes cost one round per offloader)."""
    info = {"model_delay_s": result.delay_s, "model_accuracy": result.accuracy,
            "converged": bool(result.converged), "policy_rounds": int(result.rounds)}
    th = thresholds if thresholds is not None else (dict(result.thresholds) or None)
    return Decision(result.routing, th, int(result.rounds if rounds is None else rounds), info)


class PlannerPolicy(SimPolicy):
    """Re-plans every slot with ``planner(scenario, previous_decision) -> Decision``.

    The planner is a pure function over the slot's scenario (the whole-network drivers in
    ``agent.policies``); ``rounds`` of its decision set the length of the configuration phase.
    """

    def __init__(self, name: str, planner: Planner, stateless: bool = False):
        self.name = name
        self._planner = planner
        # a stateless planner (one that ignores the previous decision) gives the same answer for
        # the same setting: outside the dynamic mode it is computed once and re-announced
        self._stateless = stateless
        self._last: Optional[tuple] = None
        self.decisions: Dict[int, Decision] = {}  # slot -> decision, for the per-slot report

    def start_slot(self, view: SlotView) -> Decision:
        if self._stateless and self._last is not None and self._last[0] is view.scenario:
            decision = self._last[1]
        else:
            decision = self._planner(view.scenario, view.previous)
            self._last = (view.scenario, decision)
        self.decisions[view.slot] = decision
        return decision
