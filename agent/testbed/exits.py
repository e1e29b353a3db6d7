"""The share of tasks that reaches each stage (I_h) before a run has measured it.

The capacity a testbed prints (and ``N%`` rates are relative to) and the model columns of a rate
with no exits counted yet use it. It follows the exit thresholds the agents start with: the
topology's, but under the ``mdi-exit`` policy its knobs', as that policy reads them
(``mdi_exit.rules.exit_thresholds``, which ``MdiExitPolicy.thresholds`` applies too): every
exit at the knob ``threshold`` (fixed, or Alg. 4's start), and ``early_exit`` false runs
every task to the final stage.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from agent.policies.mdi_exit.rules import POLICY_NAME as MDI_EXIT
from agent.policies.mdi_exit.rules import exit_thresholds, params_from_knobs
from agent.policies.thresholds import DEFAULT_THRESHOLD
from agent.testbed.topology import Topology
from engines.exit_profile import exit_stats, load_exit_profile


def initial_thresholds(topo: Topology, stages, policy: Optional[str] = None
                       ) -> Optional[Dict[int, float]]:
    """{exit stage: threshold} the agents start with; None when no task leaves early.

    ``policy`` None (the capacity, one for every policy of the run) reads the ``mdi-exit`` knobs
    when the topology has them: a topology that sets them is an MDI-Exit one.
    """
    configured = {s: topo.thresholds.get(s, DEFAULT_THRESHOLD) for s in stages}
    knobs = topo.knobs.get(MDI_EXIT)
    if policy == MDI_EXIT or (policy is None and isinstance(knobs, dict)):
        params = params_from_knobs(knobs if isinstance(knobs, dict) else {})
        # as the policy applies them (Alg. 4 starts at params.threshold)
        return exit_thresholds(params, configured, params.threshold) or None
    return configured


def default_remaining(topo: Topology, bundle, policy: Optional[str] = None) -> List[float]:
    """I_h per stage at the initial thresholds (``initial_thresholds``) of ``policy``."""
    h = len(bundle.stages)
    if not bundle.exit_profile_path:
        return [1.0] * h
    profile = load_exit_profile(bundle.exit_profile_path)
    th = initial_thresholds(topo, profile.early_exit_stages, policy)
    if th is None:
        return [1.0] * h
    return [float(x) for x in exit_stats(profile, th).remaining]
