"""The scenario a testbed topology is, for ``plan`` and ``simulate`` (``edge-agent scenario
topology``): the same system the testbed's model columns describe, so that the planners and
the simulator predict what a testbed run measures.

It is ``scenario_object``'s (stages from the bundle, each source's rate its share of a total,
the workers' emulated capacities, the links' emulated rates), plus what the agents run that a
scenario says in its knobs: the bundle's exit profile with every exit starting at the
topology's threshold (``initial_threshold``), links as servers of r bytes/s (``link_model``
"shared": the links the testbed paces or shapes, and its model column's; a topology whose
DTO-EE agents plan with another link model gets a WARNING saying so), baselines that keep their thresholds
(``baseline_thresholds`` "fixed": a node's ``cf`` and ``bf`` cannot tune them), and the
topology's DTO-EE knobs and ``mdi-exit`` section.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, NamedTuple, Optional

from agent.policies.setting import Scenario
from agent.scenario.format import parse_scenario
from agent.policies.model import DEFAULT_LINK_MODEL
from agent.testbed.driver import load_bundle_for
from agent.testbed.exits import default_remaining, initial_thresholds
from agent.testbed.local import bundle_stages
from agent.testbed.topology import Topology, load_topology
from agent.testbed.topology_bundle import (StageInfo, capacity_tasks_s, check_against_bundle,
                                           scenario_object)

log = logging.getLogger(__name__)

# the agents' policy whose thresholds a scenario starts from: cf and bf keep the topology's, and
# DTO-EE starts its tuning there (MDI-Exit's come from its own knobs, carried as its section)
_CONFIGURED = "cf"
# knobs of the written scenario, whatever the topology says: links as the testbed's are
# (servers of r bytes/s; its model column too), baselines as its agents run them
FIXED_KNOBS = {"link_model": "shared", "baseline_thresholds": "fixed"}


class TopologySetting(NamedTuple):
    """A topology as the testbed reads it: its bundle, stages and capacity."""

    topo: Topology
    bundle: Any  # engines.bundle.Bundle
    stages: List[StageInfo]
    capacity_tasks_s: float  # largest total rate it serves (``capacity_tasks_s``)


def load_testbed(topology: Optional[str]) -> TopologySetting:
    """Read ``topology`` (a file or a shipped name; None: the testbed's default) and its bundle
    as ``edge-agent testbed`` does, refusing one that no scenario can describe: a worker holding
    several stages or answering every task (MDI-Exit's, DIMEE's, MLCI's nodes), a worker whose
    capacity is not emulated (its speed is known only once it runs). Errors name the file."""
    topo = load_topology(topology)
    for i, w in enumerate(topo.workers):
        if w.stages[1] > w.stage or w.terminal:
            raise topo.error("workers[%d]: %r %s; a scenario has one stage per worker and "
                             "forwards every task (DTO-EE's model)" % (
                                 i, w.id, "answers every task" if w.terminal
                                 else "holds stages %d..%d" % w.stages))
        if w.emulate_capacity_flops is None:
            raise topo.error("workers[%d].emulate_capacity_flops: missing; a scenario needs "
                             "every worker's capacity (FLOP/s)" % i)
    bundle = load_bundle_for(topo)
    stages = bundle_stages(bundle)
    check_against_bundle(topo, stages)
    return TopologySetting(topo, bundle, stages,
                          capacity_tasks_s(topo, stages, default_remaining(topo, bundle)))


def start_threshold(setting: TopologySetting) -> Optional[float]:
    """The one threshold every exit starts at (None: the bundle has no exit profile, so the
    testbed's model takes no early exit either). A scenario has one ``initial_threshold``, so
    thresholds that differ per stage are an error naming the topology's field."""
    profile_path = setting.bundle.exit_profile_path
    if not profile_path:
        return None
    exits = [h for h, st in enumerate(setting.stages, start=1)
             if st.has_exit and h < len(setting.stages)]
    th = initial_thresholds(setting.topo, exits, _CONFIGURED) or {}
    values = sorted(set(th.values()))
    if len(values) > 1:
        raise setting.topo.error(
            "thresholds: %s differ per stage, but a scenario starts every exit at one "
            "threshold (knobs.initial_threshold); give every exit stage the same"
            % ", ".join("%d: %g" % kv for kv in sorted(th.items())))
    return values[0] if values else None


def topology_scenario(setting: TopologySetting, total_rate: float, comment: str = "") -> Scenario:
    """The scenario of ``setting`` at ``total_rate`` tasks/s over all sources (module
    docstring); validated as a scenario file is."""
    from agent.policies.registry import check_scenario_knobs

    topo = setting.topo
    obj = scenario_object(topo, setting.stages, total_rate,
                          default_remaining(topo, setting.bundle, _CONFIGURED))
    knobs: Dict[str, Any] = dict(topo.knobs.get("dtoee") or {})  # DTO-EE's are the top level
    if isinstance(topo.knobs.get("mdi-exit"), dict):
        knobs["mdi-exit"] = dict(topo.knobs["mdi-exit"])
    own = knobs.get("link_model", DEFAULT_LINK_MODEL)
    if own != FIXED_KNOBS["link_model"]:  # one link model in a scenario: its links' and plans'
        log.warning("%s: knobs.dtoee.link_model %r: the scenario models the links as %r (the "
                    "testbed's links and its model column), so plan -p dtoee on it plans as "
                    "agents with link_model %r would", topo.path, own,
                    FIXED_KNOBS["link_model"], FIXED_KNOBS["link_model"])
    knobs.update(FIXED_KNOBS)
    c = start_threshold(setting)
    if c is not None:  # the profile decides the exits, from the topology's thresholds on
        del obj["remaining"]
        obj["exit_profile"] = setting.bundle.exit_profile_path
        knobs["initial_threshold"] = c
    obj["knobs"] = knobs
    if comment:
        obj["comment"] = comment
    scenario = parse_scenario(obj)
    check_scenario_knobs(scenario.knobs)
    return scenario
