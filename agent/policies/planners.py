"""Table-driven policies for the simulator: the planners of ``agent.policies`` behind the hook.

Names: ``mdi-exit`` (the one per-task policy: MDI-Exit's queues, see ``agent.sim.mdi_exit``),
``dtoee`` (routing and thresholds tuned), ``dtoee-cX`` (DTO-EE with every threshold fixed
at X, e.g. ``dtoee-c0.7``: the paper's "DTO w/o AT-X"), ``cf``, ``bf``, ``ngto``, ``ga``. Every
slot the planner runs on that slot's scenario (DTO-EE warm-started from the decision in force),
and the rounds it used set the configuration phase; NGTO's offloaders move one at a time, so
each of its passes costs one round per offloader. Nothing here computes a delay or a routing.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional

from agent.errors import UsageError
from agent.policies.setting import Scenario
from agent.policies.sim_api import Decision, PlannerPolicy, SimPolicy

POLICY_NAMES = ("dtoee", "cf", "bf", "ngto", "ga", "mdi-exit")
_FIXED = re.compile(r"^dtoee-c(\d*\.?\d+)$")


def _decision(result, rounds: Optional[int] = None, thresholds=None) -> Decision:
    info = {"model_delay_s": result.delay_s, "model_accuracy": result.accuracy,
            "converged": bool(result.converged), "policy_rounds": int(result.rounds)}
    th = thresholds if thresholds is not None else (dict(result.thresholds) or None)
    return Decision(result.routing, th, int(result.rounds if rounds is None else rounds), info)


def _fixed_remaining(scenario: Scenario, c: float) -> Scenario:
    """``scenario`` with the exit profile replaced by the remaining ratios at thresholds c."""
    from engines.exit_profile import exit_stats

    prof = scenario.exit_profile
    if prof is None:
        return scenario
    rem = exit_stats(prof, [c] * len(prof.early_exit_stages)).remaining
    return dataclasses.replace(scenario, exit_profile=None, remaining=tuple(float(x) for x in rem))


def make_policy(name: str, rounds: Optional[int] = None,
                options: Optional[Mapping[str, object]] = None) -> SimPolicy:
    """The simulator policy called ``name``; ``rounds`` caps DTO-EE's rounds per slot."""
    from agent.policies.dtoee.protocol import run_dtoee

    options = dict(options or {})
    if name == "mdi-exit":  # queue-based, per task (agent.sim.mdi_exit), not a planner
        from agent.policies.mdi_exit.sim import MdiExitSimPolicy

        return MdiExitSimPolicy(overrides=options.get(name))
    fixed = _FIXED.match(name)
    if name == "dtoee":
        def plan(scn: Scenario, prev: Optional[Decision]) -> Decision:
            res = run_dtoee(scn, rounds=rounds,
                            thresholds=prev.thresholds if prev else None,
                            initial_routing=prev.routing if prev else None)
            return _decision(res)
    elif fixed:
        c = float(fixed.group(1))
        if not 0.0 < c <= 1.0:
            raise UsageError("--policies: %s: the fixed threshold must be in (0, 1]" % name)

        def plan(scn: Scenario, prev: Optional[Decision]) -> Decision:
            res = run_dtoee(_fixed_remaining(scn, c), rounds=rounds,
                            initial_routing=prev.routing if prev else None)
            th = {h: c for h in scn.exit_profile.early_exit_stages} \
                if scn.exit_profile is not None else None
            return _decision(res, thresholds=th)
    elif name in ("cf", "bf", "ngto", "ga"):
        from agent.policies.baselines import plans as baselines

        fn = getattr(baselines, name if name in ("ngto", "ga") else name + "_routing")

        def plan(scn: Scenario, prev: Optional[Decision]) -> Decision:
            res = fn(scn, **options.get(name, {}))
            rounds = None
            if name == "ngto":
                # offloaders take their best responses in turn: a pass costs one round each
                offloaders = len(scn.sources) + sum(
                    1 for w in scn.workers if w.stage < scn.num_stages)
                rounds = int(res.rounds) * offloaders
            return _decision(res, rounds=rounds)
        return PlannerPolicy(name, plan, stateless=True)
    else:
        raise UsageError("--policies: unknown policy %r (known: %s, dtoee-cX)"
                         % (name, ", ".join(POLICY_NAMES)))
    return PlannerPolicy(name, plan)
