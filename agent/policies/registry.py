"""The one table of policy names: what runs in the agent, in the simulator and in ``plan``.

One ``PolicyRow`` per name says how to build the policy in each place that can run it, and how
to read its knobs:

- ``agent(thresholds, knobs, seed) -> AgentPolicy`` for ``edge-agent run`` (None when the
  policy cannot run on a node; ``not_in_agent`` says why),
- ``sim(name, rounds, options) -> SimPolicy`` for ``simulate`` (None: not simulated),
- ``planner(scenario, PlanRequest) -> PolicyResult`` for ``plan`` (None: no offline plan),
- ``agent_knobs(knobs, where, error)`` validates a node config's ``policy_knobs`` (unknown keys
  and keys the agent cannot honour are errors naming ``where.key``),
- ``scenario_knobs``: the keys of a scenario's shared ``knobs`` object the policy reads,
- ``section(knobs[name], where)`` reads the policy's own section of them, when a file is read.

The node config, ``plan``, ``simulate``, ``testbed`` and the simulator's experiments all take
names and factories from here. ``register`` adds a row at run time (plug-ins, tests); see
``docs/adding-a-policy.md``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies import api
from agent.policies.baselines import plans as baselines
from agent.policies.baselines.agent import BaselinePolicy, parse_baseline_knobs
from agent.policies.dimee import replay as dimee_replay
from agent.policies.dimee.rules import params_from_knobs as parse_dimee_section
from agent.policies.dimee.sim import DimeeSimPolicy, tier_devices
from agent.policies.dimee.agent import DimeePolicy, parse_agent_knobs as parse_dimee_agent_knobs
from agent.policies.dtoee import sim as dtoee_sim
from agent.policies.dtoee.agent import DtoeePolicy
from agent.policies.dtoee.knobs import KNOB_NAMES, DtoeeParams, parse_agent_knobs, parse_knobs
from agent.policies.dtoee.network import run_dtoee
from agent.policies.fixed import parse_fixed_knobs
from agent.policies.fixed_agent import FixedWeightsPolicy
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.policies.mdi_exit.rules import POLICY_NAME as MDI_EXIT, params_from_knobs
from agent.policies.mdi_exit.sim import MdiExitSimPolicy
from agent.policies.mlci import replay as mlci_replay
from agent.policies.mlci.sim import MlciSimPolicy
from agent.policies.mlci.agent import MlciPolicy, parse_agent_knobs as parse_mlci_agent_knobs
from agent.policies.mlci.rules import params_from_knobs as parse_mlci_section
from agent.policies.model import PolicyResult
from agent.policies.setting import Scenario, ScenarioError
from agent.policies.sim_api import PlannerPolicy, SimPolicy, decision_from_result, refuse_tiers

AgentFactory = Callable[[Mapping[int, float], Mapping[str, Any], int], api.AgentPolicy]
SimFactory = Callable[[str, Optional[int], Mapping[str, Any]], SimPolicy]
KnobParser = Callable[[Mapping[str, Any], str, Type[Exception]], Any]


@dataclasses.dataclass(frozen=True)
class PlanRequest:
    """What ``plan`` asks a planner: the command's options and the scenario's DTO-EE knobs
    (every planner tunes thresholds with DTO-EE's threshold step; the baselines' do not when
    knobs.baseline_thresholds is "fixed")."""

    params: DtoeeParams
    rounds: Optional[int] = None  # --rounds; None = the policy's own default
    staleness: Optional[int] = None  # --staleness (ga)
    seed: int = 0


Planner = Callable[[Scenario, PlanRequest], PolicyResult]


@dataclasses.dataclass(frozen=True)
class PolicyRow:
    """One policy name and how each part of the project runs it (module docstring)."""

    name: str
    summary: str  # one line for --help and the docs
    agent: Optional[AgentFactory] = None
    not_in_agent: str = ""  # why ``agent`` is None
    sim: Optional[SimFactory] = None
    planner: Optional[Planner] = None
    agent_knobs: Optional[KnobParser] = None  # None: the policy takes no policy_knobs
    scenario_knobs: Tuple[str, ...] = ()
    pattern: str = ""  # regular expression of a family of names (``dtoee-c0.7``); "" = name
    one_stage_only: str = ""  # why the agent policy needs one stage per worker ("" = it doesn't)
    tiered: bool = False  # its planner takes terminal workers and restart links (DIMEE, MLCI)
    # reads the policy's own scenario section, ``knobs[name]`` (errors name ``where.key``);
    # run when a scenario is read, whichever policy is planned
    section: Optional[Callable[[Mapping[str, Any], str], Any]] = None


_ROWS: Dict[str, PolicyRow] = {}


def register(row: PolicyRow, replace: bool = False) -> None:
    """Add ``row`` to the table (``replace`` to overwrite a row of the same name)."""
    if row.name in _ROWS and not replace:
        raise ValueError("policy %r is already registered" % row.name)
    if row.agent is None and not row.not_in_agent:
        raise ValueError("policy %r: say in not_in_agent why it cannot run on a node" % row.name)
    _ROWS[row.name] = row


def unregister(name: str) -> None:
    """Remove the row called ``name`` (no error when there is none)."""
    _ROWS.pop(name, None)


def names(part: str = "") -> List[str]:
    """Registered names, in table order; ``part`` = "agent", "sim" or "planner" keeps those
    that run there."""
    return [n for n, r in _ROWS.items() if not part or getattr(r, part) is not None]


def lookup(name: str, where: str, part: str = "") -> PolicyRow:
    """The row for ``name`` (a family's pattern matches too); with ``part``, it must run there.

    An unknown name is a one-line ``UsageError``: ``<where>: unknown policy 'x' (known: ...)``.
    """
    row = _ROWS.get(name)
    if row is None:
        row = next((r for r in _ROWS.values() if r.pattern and re.match(r.pattern + "$", name)),
                   None)
    known = names(part)
    if row is None:
        raise UsageError("%s: unknown policy %r (known: %s)" % (where, name, ", ".join(known)))
    if part and getattr(row, part) is None:
        why = (": " + row.not_in_agent) if part == "agent" else ""
        raise UsageError("%s: policy %r cannot run %s%s (these can: %s)"
                         % (where, name, _PLACES[part], why, ", ".join(known)))
    return row


_PLACES = {"agent": "on a node", "sim": "in the simulator", "planner": "in plan"}


# -- what the parts call -------------------------------------------------------------------

def make_policy(name: str, thresholds: Mapping[int, float], knobs: Mapping[str, Any],
                seed: int = 0) -> api.AgentPolicy:
    """The agent-side policy for a node config's ``policy`` name."""
    return lookup(name, "policy", "agent").agent(thresholds, knobs, seed)  # type: ignore[misc]


def check_agent_knobs(name: str, knobs: Mapping[str, Any], where: str = "policy_knobs",
                      error: Type[Exception] = UsageError) -> Any:
    """Validate a node config's ``policy_knobs`` for policy ``name``; errors name ``where.key``."""
    row = lookup(name, "policy", "agent")
    if row.agent_knobs is None:
        Fields(knobs, where, error).reject_unknown(())
        return None
    return row.agent_knobs(knobs, where, error)


def check_scenario_knobs(knobs: Mapping[str, Any], where: str = "knobs") -> None:
    """Reject a scenario knob that no registered policy reads (a typo), with a hint, and a
    DTO-EE knob out of its range (every planner reads those)."""
    known = {k for r in _ROWS.values() for k in r.scenario_knobs}
    Fields(knobs, where, ScenarioError).reject_unknown(sorted(known))
    parse_knobs(knobs, where)
    ga_staleness_knob(knobs, where)
    baselines.baseline_thresholds_knob(knobs, where)
    for name in sorted(set(knobs) & set(_ROWS)):  # a policy's own section: {knob: value}
        if not isinstance(knobs[name], Mapping):
            raise ScenarioError("%s.%s: must be an object {knob: value}, got %.100r"
                                % (where, name, knobs[name]))
        if _ROWS[name].section is not None:
            try:
                _ROWS[name].section(knobs[name], "%s.%s" % (where, name))
            except ScenarioError:
                raise
            except UsageError as exc:  # the policy's own error class: a scenario's error here
                raise ScenarioError(str(exc)) from None


def section_names() -> List[str]:
    """The policies that read a section of their own in a scenario's ``knobs``."""
    return sorted(n for n, r in _ROWS.items() if r.section is not None)


def make_sim_policy(name: str, rounds: Optional[int] = None,
                    options: Optional[Mapping[str, Any]] = None) -> SimPolicy:
    """The simulator policy called ``name``; ``rounds`` caps DTO-EE's rounds per slot."""
    row = lookup(name, "--policies", "sim")
    return row.sim(name, rounds, dict(options or {}))  # type: ignore[misc]


def plan(scenario: Scenario, name: str, rounds: Optional[int] = None, step: Optional[str] = None,
         staleness: Optional[int] = None, seed: int = 0) -> PolicyResult:
    """Run policy ``name``'s planner on ``scenario`` (``edge-agent plan``)."""
    row = lookup(name, "--policy", "planner")
    if not row.tiered:
        refuse_tiers(scenario, "plan --policy %s" % name)
    params = parse_knobs(scenario.knobs)  # validates the DTO-EE knobs for every policy
    if rounds is not None and rounds < 1:
        raise UsageError("--rounds: must be >= 1, got %d" % rounds)
    if step is not None:
        params = dataclasses.replace(params, step=step)
    return row.planner(scenario, PlanRequest(params, rounds, staleness, seed))  # type: ignore


# -- the built-in rows ---------------------------------------------------------------------

def _stateless(name: str, fn: Callable[[Scenario], Any], rounds_of=None) -> PlannerPolicy:
    """A planner that ignores the previous decision, as a simulator policy."""
    def plan_slot(scn, prev):
        res = fn(scn)
        return decision_from_result(res, rounds=rounds_of(scn, res) if rounds_of else None)
    return PlannerPolicy(name, plan_slot, stateless=True)


def _ngto_rounds(scn: Scenario, res: Any) -> int:
    # offloaders take their best responses in turn: a pass costs one round each
    offloaders = len(scn.sources) + sum(1 for w in scn.workers if w.stage < scn.num_stages)
    return int(res.rounds) * offloaders


def _fixed_c(name: str, rounds: Optional[int], options: Mapping[str, Any]) -> SimPolicy:
    c = float(name[len("dtoee-c"):])
    if not 0.0 < c <= 1.0:
        raise UsageError("--policies: %s: the fixed threshold must be in (0, 1]" % name)
    return dtoee_sim.fixed_threshold_sim_policy(name, c, rounds)


def _ga_staleness(scenario: Scenario, req: PlanRequest) -> int:
    if req.staleness is not None:
        if req.staleness < 0:
            raise UsageError("--staleness: must be >= 0, got %d" % req.staleness)
        return req.staleness
    return ga_staleness_knob(scenario.knobs)


def ga_staleness_knob(knobs: Mapping[str, Any], where: str = "knobs") -> int:
    """GA's ``ga_staleness`` scenario knob (default 1): what plan and simulate both run with."""
    from agent.policies.baselines.plans import staleness_knob

    return staleness_knob(knobs, where)


def _optimum(scenario: Scenario, req: PlanRequest) -> PolicyResult:
    from agent.policies.optimum import optimum  # scipy's solver: loaded only when asked

    th = None
    if scenario.exit_profile is not None:
        th = {h: req.params.initial_threshold for h in scenario.exit_profile.early_exit_stages}
    return optimum(scenario, th)


_CENTRAL = "a central computation over the whole network's state, which no node holds"
_TUNED = ("baseline_thresholds",)  # the baselines' planners: tuned or fixed thresholds

for _row in (
    PolicyRow("dtoee", "DTO-EE: distributed routing and exit thresholds (the default)",
              agent=DtoeePolicy, agent_knobs=parse_agent_knobs,
              one_stage_only="DTO-EE models one stage per worker",
              sim=lambda n, r, o: dtoee_sim.dtoee_sim_policy(n, r),
              planner=lambda s, q: run_dtoee(s, rounds=q.rounds, params=q.params),
              scenario_knobs=KNOB_NAMES),
    PolicyRow("dtoee-cX", "DTO-EE with every exit threshold fixed at X, e.g. dtoee-c0.7",
              not_in_agent="use dtoee with fixed thresholds in the config", sim=_fixed_c,
              pattern=r"dtoee-c(\d*\.?\d+)"),
    PolicyRow("cf", "computing-first: split by the successors' capacities",
              agent=lambda th, k, s: BaselinePolicy("cf", th, k, s),
              agent_knobs=parse_baseline_knobs,
              sim=lambda n, r, o: _stateless(n, lambda s: baselines.cf_routing(s, **o.get(n, {}))),
              planner=lambda s, q: baselines.cf_routing(s), scenario_knobs=_TUNED),
    PolicyRow("bf", "bandwidth-first: split by the link rates",
              agent=lambda th, k, s: BaselinePolicy("bf", th, k, s),
              agent_knobs=parse_baseline_knobs,
              sim=lambda n, r, o: _stateless(n, lambda s: baselines.bf_routing(s, **o.get(n, {}))),
              planner=lambda s, q: baselines.bf_routing(s), scenario_knobs=_TUNED),
    PolicyRow("ngto", "NGTO: offloaders' best responses in turn", not_in_agent=_CENTRAL,
              sim=lambda n, r, o: _stateless(n, lambda s: baselines.ngto(s, **o.get(n, {})),
                                             _ngto_rounds),
              planner=lambda s, q: baselines.ngto(s, max_rounds=q.rounds or 100),
              scenario_knobs=_TUNED),
    PolicyRow("ga", "GA: the sources' genetic path search", not_in_agent=_CENTRAL,
              sim=lambda n, r, o: _stateless(n, lambda s: baselines.ga(s, **dict(
                  {"staleness": ga_staleness_knob(s.knobs)}, **o.get(n, {})))),
              planner=lambda s, q: baselines.ga(s, rounds=q.rounds or 20,
                                                staleness=_ga_staleness(s, q), seed=q.seed),
              scenario_knobs=("ga_staleness",) + _TUNED),
    PolicyRow(MDI_EXIT, "MDI-Exit: per-task queues, admission and threshold adaptation",
              agent=MdiExitPolicy,
              agent_knobs=lambda k, w, e: params_from_knobs(k, w),
              sim=lambda n, r, o: MdiExitSimPolicy(overrides=o.get(n)),
              scenario_knobs=(MDI_EXIT,), section=params_from_knobs),
    PolicyRow("fixed", "fixed routing weights from policy_knobs.routing, else uniform",
              agent=FixedWeightsPolicy, agent_knobs=parse_fixed_knobs),
    PolicyRow("optimum", "the central convex optimum for the start thresholds",
              not_in_agent=_CENTRAL, planner=_optimum),
):
    register(_row)

# DIMEE and MLCI: per-task policies over tiers (a worker holding stages 1..k), in every part
_AGENT_CLASSES = {"dimee": (DimeePolicy, parse_dimee_agent_knobs),
                  "mlci": (MlciPolicy, parse_mlci_agent_knobs)}


def _dimee_section(section: Mapping[str, Any], where: str) -> None:
    parse_dimee_section(section, where, extra=("tiers",))  # the simulator's: its device tiers
    tier_devices(section, where + ".tiers")


_SECTIONS = {"dimee": _dimee_section, "mlci": parse_mlci_section}  # knobs.dimee, knobs.mlci


def _tiered_sim(name: str, rounds: Optional[int], options: Mapping[str, Any]) -> SimPolicy:
    cls = DimeeSimPolicy if name.startswith(("dimee", "tier-")) else MlciSimPolicy
    return cls(name, overrides=options.get(name))


for _name, _summary in (
        ("dimee", "DIMEE (Ours-D): tier by the input embedding's nearest pool mean, adaptive"),
        ("dimee-f", "DIMEE (Ours-F): tier by the nearest of fixed pool means"),
        ("mlci", "MLCI: levels end/edge/cloud, patience exit, probabilistic offload, ensemble"),
        ("tabi", "MLCI without early exit (tau = 0), the paper's Tabi"),
        ("mlci-noens", "MLCI answering with the last level's output alone (no ensemble)")):
    _mod = dimee_replay if _name.startswith("dimee") else mlci_replay
    _cls, _knobs = _AGENT_CLASSES["dimee" if _name.startswith("dimee") else "mlci"]
    register(PolicyRow(_name, _summary, sim=_tiered_sim,
                       agent=(lambda c, n: lambda th, k, s: c(th, k, s, name=n))(_cls, _name),
                       agent_knobs=lambda k, w, e, p=_knobs, n=_name: p(k, w, name=n),
                       planner=(lambda m, n: lambda s, q: m.planner(s, n))(_mod, _name),
                       tiered=True, section=_SECTIONS.get(_name),
                       scenario_knobs=("dimee",) if _mod is dimee_replay else ("mlci",)))
for _name, _summary in (
        ("tier-cloud", "DIMEE's baseline: every task to the cloud (the paper's 1.00 cost)"),
        ("tier-edge", "DIMEE's baseline: every task to the edge"),
        ("tier-mobile", "DIMEE's baseline: every task to the mobile"),
        ("tier-random", "DIMEE's baseline: each task to a uniformly drawn tier"),
        ("tier-oracle", "DIMEE's tiers by Alg. 1 on the task's own confidences (upper bound)")):
    register(PolicyRow(_name, _summary, sim=_tiered_sim, tiered=True,
                       not_in_agent="a baseline of DIMEE's paper, run in simulate (plan --policy "
                                    "dimee reports it among its baselines)"))

